"""Run CPU-heavy or hostile-input work in a child process with rlimits and a wall-clock timeout.

The event loop only awaits the child's pipes. A child that overruns its CPU time, address space
or wall clock is killed, and the caller gets a reason a person can read. Running children are
registered per job, so cancelling a job can kill its work at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# A line of child output can hold a whole page of text.
_STREAM_LIMIT = 256 * 1024 * 1024


@dataclass
class SandboxResult:
    returncode: int
    stderr: str
    failure: str | None  # human-readable reason when the child did not finish cleanly


class SandboxFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_running: dict[uuid.UUID, set[asyncio.subprocess.Process]] = defaultdict(set)
_cancelled: set[uuid.UUID] = set()


def kill_job(job_id: uuid.UUID) -> int:
    """Kill every child working for the job; returns how many were killed."""
    _cancelled.add(job_id)
    procs = list(_running.get(job_id, ()))
    for proc in procs:
        _kill(proc)
    return len(procs)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _limits(cpu_seconds: int, memory_mb: int) -> Callable[[], None]:
    def apply() -> None:
        os.setsid()  # own process group, so a kill takes grandchildren too
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def describe_exit(returncode: int, *, cpu_seconds: int, memory_mb: int) -> str:
    if returncode == -signal.SIGXCPU or returncode == -signal.SIGKILL:
        return (
            f"Processing was stopped: it used more than its {cpu_seconds} s CPU-time limit "
            f"or {memory_mb} MB memory limit."
        )
    if returncode < 0:
        return f"Processing crashed (signal {signal.Signals(-returncode).name})."
    return f"Processing failed (exit status {returncode})."


async def run_sandboxed(
    argv: Sequence[str],
    *,
    job_id: uuid.UUID | None,
    timeout: float,
    cpu_seconds: int,
    memory_mb: int,
    on_line: Callable[[bytes], Awaitable[None]] | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
) -> SandboxResult:
    """Run argv; feed each stdout line to on_line as it arrives. Never raises for child failure."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=_limits(cpu_seconds, memory_mb),
        env={**os.environ, **(env or {})},
        limit=_STREAM_LIMIT,
    )
    if job_id is not None:
        _running[job_id].add(proc)
        if job_id in _cancelled:
            _kill(proc)

    async def pump_stdout() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if on_line is not None:
                await on_line(line)

    async def pump_stderr() -> bytes:
        assert proc.stderr is not None
        kept = b""
        # Keep the first 64 KiB; drain the rest so a chatty child cannot block on a full pipe.
        while block := await proc.stderr.read(64 * 1024):
            if len(kept) < 64 * 1024:
                kept += block[: 64 * 1024 - len(kept)]
        return kept

    async def feed_stdin() -> None:
        if stdin is not None and proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
                proc.stdin.close()

    stderr_task = asyncio.ensure_future(pump_stderr())
    failure: str | None = None
    try:
        await asyncio.wait_for(
            asyncio.gather(feed_stdin(), pump_stdout(), proc.wait()), timeout=timeout
        )
    except TimeoutError:
        _kill(proc)
        failure = f"Processing took longer than the {timeout:g} s time limit and was stopped."
    except BaseException:
        _kill(proc)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            if proc.returncode is None:
                _kill(proc)
        await proc.wait()
        if job_id is not None:
            _running[job_id].discard(proc)
            if not _running[job_id]:
                _running.pop(job_id, None)
    stderr = (await stderr_task).decode("utf-8", "replace")
    rc = proc.returncode if proc.returncode is not None else -9
    if failure is None and job_id is not None and job_id in _cancelled:
        failure = "The job was cancelled."
    if failure is None and rc != 0:
        failure = describe_exit(rc, cpu_seconds=cpu_seconds, memory_mb=memory_mb)
    return SandboxResult(returncode=rc, stderr=stderr, failure=failure)
