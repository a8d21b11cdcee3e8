"""The driver every harness in tests/fuzz shares (`make fuzz`).

A harness is a function of one input (bytes) that raises on a finding, plus seed inputs.
Each runs for FUZZ_SECONDS (default 60) and exits non-zero on the first finding, with the
input saved under test-artifacts/fuzz/<harness>/ (reproduce: `python -m tests.fuzz.<harness>
<file>`).

Two engines:
- atheris (coverage-guided libFuzzer) when it is installed: `pip install -e '.[fuzz]'`;
- otherwise (or FUZZ_ENGINE=random) a plain-python mutator over the seeds: bit flips,
  interesting bytes, inserted, deleted and duplicated ranges, splices of two seeds. It finds
  less than atheris, but it runs anywhere and exercises the same checks.
Each input gets FUZZ_INPUT_SECONDS (default 10) before it counts as a hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

Target = Callable[[bytes], None]

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "fuzz"
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, ord("\n"), ord("\r"), ord("<"), ord(" "), ord("%")]


class Hang(Exception):
    """An input ran past FUZZ_INPUT_SECONDS."""


def fuzz_seconds() -> int:
    return int(os.environ.get("FUZZ_SECONDS", "60"))


def input_seconds() -> int:
    return int(os.environ.get("FUZZ_INPUT_SECONDS", "10"))


def engine() -> str:
    chosen = os.environ.get("FUZZ_ENGINE", "")
    if chosen:
        return chosen
    return "atheris" if importlib.util.find_spec("atheris") is not None else "random"


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """Raise Hang in the main thread after `seconds` (C code is interrupted when it returns
    to Python: the run as a whole is bounded by the caller's timeout)."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise Hang(f"input still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def mutate(data: bytes, seeds: Sequence[bytes], rng: random.Random) -> bytes:
    """One to four random edits of `data`."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(7)
        at = rng.randrange(len(out) + 1)
        if choice == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:  # an interesting byte
            out[rng.randrange(len(out))] = rng.choice(INTERESTING)
        elif choice == 2:  # insert random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 16))
        elif choice == 3 and out:  # delete a range
            out[at : at + rng.randint(1, 64)] = b""
        elif choice == 4 and out:  # duplicate a range
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 256)]
        elif choice == 5 and seeds:  # splice in part of a seed
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            out[at:at] = other[start : start + rng.randint(1, 512)]
        elif choice == 6:  # truncate
            del out[at:]
    return bytes(out)


def save(name: str, data: bytes) -> Path:
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return path


def run_random(name: str, target: Target, seeds: Sequence[bytes], seconds: int) -> int:
    rng = random.Random(int(os.environ.get("FUZZ_SEED", str(time.time_ns()))))
    pool = [s for s in seeds if s] or [b""]
    deadline = time.monotonic() + seconds
    runs = 0
    inputs = iter(seeds)
    while time.monotonic() < deadline:
        data = next(inputs, None)
        if data is None:
            base = rng.choice(pool)
            data = rng.randbytes(rng.randint(0, 256)) if rng.random() < 0.05 else base
            data = mutate(data, pool, rng)
        try:
            with time_limit(input_seconds()):
                target(data)
        except Exception:
            traceback.print_exc()
            print(f"{name}: finding after {runs} inputs, saved as {save(name, data)}")
            return 1
        runs += 1
        if runs % 50 == 0 and len(pool) < 500:
            pool.append(data)  # keep some mutants to mutate further
    print(f"{name}: {runs} inputs in {seconds} s (random engine), no finding")
    return 0


def run_atheris(name: str, target: Target, seeds: Sequence[bytes], seconds: int) -> int:
    import atheris

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(seeds):
        (corpus / f"seed-{i}").write_bytes(seed)
    artifacts = ARTIFACTS / name
    artifacts.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-timeout={input_seconds()}",
        "-rss_limit_mb=3072",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(argv, target)
    atheris.Fuzz()  # exits the process: 0 at the time limit, non-zero on a finding
    return 0


def main(name: str, target: Target, seeds: Callable[[], list[bytes]]) -> int:
    """Replay the files named on the command line, or fuzz for FUZZ_SECONDS."""
    if replaying():
        files = [Path(arg) for arg in sys.argv[1:] if not arg.startswith("-")]
        for path in files:
            print(f"replaying {path}")
            target(path.read_bytes())
        return 0
    chosen = engine()
    print(f"{name}: fuzzing for {fuzz_seconds()} s with {chosen}")
    if chosen == "atheris":
        return run_atheris(name, target, seeds(), fuzz_seconds())
    return run_random(name, target, seeds(), fuzz_seconds())


def replaying() -> bool:
    return any(not arg.startswith("-") for arg in sys.argv[1:])


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """atheris' coverage instrumentation of docpipe's own modules imported inside, when
    atheris fuzzes (libraries are left as they are: their code is not what is tested, and
    instrumenting pydantic alone takes seconds)."""
    if engine() == "atheris" and not replaying():
        import atheris

        with atheris.instrument_imports(include=["shared", "services"]):
            yield
    else:
        yield
