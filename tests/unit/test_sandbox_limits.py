"""The children's limits beyond CPU time and memory (shared.sandbox.ChildLimits): each is
broken by a child made to break it, which ends with a sentence while the worker goes on."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.extractor.service import CHILD_ARGV
from services.extractor.spec import ExtractSpec
from shared.sandbox import ChildLimits, SandboxOutcome, SandboxResult, WarmPool, run_sandboxed
from shared.settings import Settings

JOB: dict[str, Any] = {"job_id": None, "timeout": 30, "cpu_seconds": 20, "memory_mb": 1024}

# A child that does what its payload says until a limit stops it, then prints what stopped it:
# the sentence shared.sandbox.limit_reason gives the OSError (None: it never stopped).
BREAKER = r"""
import json, os, socket, sys, time
from shared.sandbox import limit_reason

cmd = json.loads(sys.stdin.read())
reason = None
done = 0
try:
    if cmd["do"] == "write":
        with open(cmd["path"], "wb") as fh:
            for _ in range(cmd["mb"]):
                fh.write(b"x" * 2**20)
                done += 1
    elif cmd["do"] == "open":
        held = []
        for _ in range(cmd["count"]):
            held.append(open(os.devnull))
            done += 1
    elif cmd["do"] == "fork":
        if os.geteuid() == 0:
            os.setuid(65534)  # the kernel does not count root's processes
        forked = []
        try:
            for _ in range(cmd["count"]):
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                forked.append(pid)
                done += 1
        finally:
            for pid in forked:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
    elif cmd["do"] == "connect":
        with socket.create_connection(("127.0.0.1", cmd["port"]), timeout=5):
            done = 1
except OSError as exc:
    reason = limit_reason(exc) or f"{type(exc).__name__}: {exc}"
print(json.dumps({"reason": reason, "done": done}), flush=True)
"""


async def breaker(cmd: dict[str, Any], limits: ChildLimits) -> tuple[SandboxResult, dict[str, Any]]:
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    result = await run_sandboxed(
        (sys.executable, "-c", BREAKER),
        stdin=json.dumps(cmd).encode(),
        on_line=on_line,
        child_limits=limits,
        **JOB,
    )
    assert len(lines) == 1, (result, lines)
    return result, json.loads(lines[0])


async def still_works() -> None:
    """The worker goes on: the next child runs as usual."""
    result = await run_sandboxed((sys.executable, "-c", "print('ok')"), **JOB)
    assert result.outcome is SandboxOutcome.OK


async def test_a_file_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    cmd = {"do": "write", "path": str(tmp_path / "big"), "mb": 8}
    result, report = await breaker(cmd, ChildLimits(file_mb=2))
    assert report == {"reason": "Processing wrote a file larger than the limit of 2 MB.", "done": 2}
    assert result.outcome is SandboxOutcome.OK  # the child said why and exited cleanly
    assert (tmp_path / "big").stat().st_size == 2 * 2**20
    _, report = await breaker({**cmd, "mb": 3}, ChildLimits(file_mb=4))
    assert report == {"reason": None, "done": 3}
    await still_works()


async def test_open_files_over_the_limit_are_refused() -> None:
    result, report = await breaker({"do": "open", "count": 200}, ChildLimits(open_files=32))
    assert report["reason"] == "Processing needed more than the limit of 32 open files."
    assert report["done"] < 32 and result.outcome is SandboxOutcome.OK
    _, report = await breaker({"do": "open", "count": 200}, ChildLimits(open_files=512))
    assert report == {"reason": None, "done": 200}
    await still_works()


async def test_processes_over_the_limit_are_refused() -> None:
    result, report = await breaker({"do": "fork", "count": 40}, ChildLimits(processes=6))
    assert report["reason"] == "Processing tried to start more processes than its limit allows."
    assert report["done"] < 6 and result.outcome is SandboxOutcome.OK
    await still_works()


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root here")
async def test_a_child_has_no_network(test_settings: Settings) -> None:
    port = int(test_settings.amqp_url.rsplit(":", 1)[1].split("/")[0])
    _, report = await breaker({"do": "connect", "port": port}, ChildLimits())
    assert report["done"] == 0 and "Network is unreachable" in report["reason"]
    # The same child with the service's network reaches the broker: the namespace did it.
    _, report = await breaker({"do": "connect", "port": port}, ChildLimits(isolate_network=False))
    assert report == {"reason": None, "done": 1}


async def test_the_extraction_child_reports_a_file_over_the_limit(tmp_path: Path) -> None:
    """A two-frame image of noise: each frame is stored as a PNG of ~3 MB, over a 1 MB limit.
    The job ends with the sentence, and no partly written blob is left behind."""
    frames = [Image.effect_noise((1000, 1000), 100).convert("RGB") for _ in range(2)]
    path = tmp_path / "noise.tiff"
    frames[0].save(path, format="TIFF", save_all=True, append_images=frames[1:])
    blobs = tmp_path / "blobs"
    spec = ExtractSpec(path=str(path), format="tiff", blob_dir=str(blobs))
    records: list[dict[str, Any]] = []

    async def on_line(line: bytes) -> None:
        records.append(json.loads(line))

    result = await run_sandboxed(
        CHILD_ARGV,
        stdin=spec.to_json(),
        on_line=on_line,
        child_limits=ChildLimits(file_mb=1),
        **JOB,
    )
    assert result.outcome is SandboxOutcome.OK
    assert records[-1] == {
        "type": "fatal",
        "reason": "Processing wrote a file larger than the limit of 1 MB.",
    }
    assert not [p for p in blobs.rglob("*") if p.is_file()]


async def test_a_pools_children_get_the_pools_limits() -> None:
    report = (
        "import json, os, resource, sys\n"
        "from shared.sandbox import end_job, read_job\n"
        "out = os.fdopen(os.dup(1), 'w', buffering=1)\n"
        "while read_job(sys.stdin.buffer) is not None:\n"
        "    kinds = ('RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC')\n"
        "    out.write(json.dumps([resource.getrlimit(getattr(resource, k)) for k in kinds]))\n"
        "    out.write('\\n')\n"
        "    end_job(out, reuse=True)\n"
    )
    limits = ChildLimits(file_mb=3, open_files=40, processes=50, isolate_network=False)
    pool = WarmPool((sys.executable, "-c", report), size=1, cpu_seconds=20, memory_mb=1024,
                    child_limits=limits)  # fmt: skip
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    try:
        result = await run_sandboxed(("false",), on_line=on_line, warm=pool, stdin=b"{}", **JOB)
        assert result.outcome is SandboxOutcome.OK, result
        assert json.loads(lines[0]) == [[3 * 2**20] * 2, [40, 40], [50, 50]]
    finally:
        await pool.close()


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(
        sandbox_file_mb=7,
        sandbox_open_files=70,
        sandbox_processes=77,
        sandbox_isolate_network=False,
    )
    assert ChildLimits.from_settings(settings) == ChildLimits(7, 70, 77, False)
    assert ChildLimits.from_settings(Settings()) == ChildLimits()  # the defaults agree


# A reused child that leaves a file in its TMPDIR on each job and reports what it found there.
LITTERER = r"""
import json, os, sys, tempfile, time
from shared.sandbox import end_job, read_job

out = os.fdopen(os.dup(1), "w", buffering=1)
while (job := read_job(sys.stdin.buffer)) is not None:
    tmp = tempfile.gettempdir()
    found = sorted(os.listdir(tmp))
    with tempfile.NamedTemporaryFile(delete=False, suffix=".page") as fh:
        fh.write(b"rendered")
    os.makedirs(os.path.join(tmp, "nested"), exist_ok=True)
    out.write(json.dumps({"tmp": tmp, "found": found}) + "\n")
    if json.loads(job[0]).get("hang"):
        time.sleep(60)
    end_job(out, reuse=True)
"""


async def test_a_jobs_temporary_files_go_when_it_ends_whatever_the_outcome() -> None:
    pool = WarmPool((sys.executable, "-c", LITTERER), size=1, cpu_seconds=20, memory_mb=1024)
    seen: list[dict[str, Any]] = []

    async def on_line(line: bytes) -> None:
        seen.append(json.loads(line))

    async def job(cmd: dict[str, Any], timeout: float = 30) -> SandboxResult:
        return await run_sandboxed(
            ("false",), on_line=on_line, warm=pool, stdin=json.dumps(cmd).encode(),
            **{**JOB, "timeout": timeout},
        )  # fmt: skip

    try:
        assert (await job({})).ok
        assert (await job({})).ok
        first, second = seen
        # The same child served both, in a folder of its own; the first job's files were gone
        # before the second began.
        assert first["tmp"] == second["tmp"] != tempfile_root()
        assert first["found"] == [] and second["found"] == []
        assert os.listdir(first["tmp"]) == []
        # A job that is stopped takes its child, and the child's folder, with it.
        assert (await job({"hang": True}, timeout=1)).outcome is SandboxOutcome.TIMEOUT
        assert not os.path.exists(seen[-1]["tmp"])
    finally:
        await pool.close()


async def test_a_one_job_childs_temporary_folder_goes_with_it() -> None:
    code = (
        "import tempfile; f = tempfile.NamedTemporaryFile(delete=False); "
        "print(tempfile.gettempdir(), flush=True)"
    )
    lines: list[bytes] = []

    async def on_line(line: bytes) -> None:
        lines.append(line)

    result = await run_sandboxed((sys.executable, "-c", code), on_line=on_line, **JOB)
    assert result.ok and lines
    folder = lines[0].decode().strip()
    assert folder != tempfile_root() and not os.path.exists(folder)


def tempfile_root() -> str:
    import tempfile

    return tempfile.gettempdir()
