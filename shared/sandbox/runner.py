"""The parent's side: run one job in a sandboxed child and say how it ended."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from shared.sandbox.identity import child_environment
from shared.sandbox.pool import WarmPool
from shared.sandbox.process import Child, ChildLimits, kill, limits, start_child
from shared.sandbox.protocol import CPU_ENV, END_OF_JOB, END_OF_LAST_JOB

CANCELLED = "The job was cancelled."

OnLine = Callable[[bytes], Awaitable[None]]


class SandboxOutcome(StrEnum):
    """How a sandboxed job ended; callers branch on this, never on the failure sentence."""

    OK = "ok"  # the child finished the job
    FAILED = "failed"  # it exited with an error status or crashed on its own
    TIMEOUT = "timeout"  # it overran the wall-clock limit and was stopped
    KILLED = "killed"  # a resource limit (CPU time, memory) stopped it
    CANCELLED = "cancelled"  # its job was cancelled (kill_job)


@dataclass
class SandboxResult:
    returncode: int
    stderr: str
    failure: str | None  # a sentence a person can read when the child did not finish cleanly
    outcome: SandboxOutcome = SandboxOutcome.OK

    @property
    def ok(self) -> bool:
        return self.outcome is SandboxOutcome.OK


_running: dict[uuid.UUID, set[asyncio.subprocess.Process]] = defaultdict(set)
_cancelled: set[uuid.UUID] = set()


def kill_job(job_id: uuid.UUID) -> int:
    """Kill every child working for the job; returns how many were killed.

    A reused child is registered for a job only while it works on it: a child that has gone
    back to its pool (or on to another job) is never killed for a job it served before."""
    _cancelled.add(job_id)
    procs = list(_running.get(job_id, ()))
    for proc in procs:
        kill(proc)
    return len(procs)


def running_children(job_id: uuid.UUID) -> int:
    """How many children are working for the job right now."""
    return len(_running.get(job_id, ()))


def _register(job_id: uuid.UUID | None, proc: asyncio.subprocess.Process) -> None:
    if job_id is None:
        return
    _running[job_id].add(proc)
    if job_id in _cancelled:
        kill(proc)


def _unregister(job_id: uuid.UUID | None, proc: asyncio.subprocess.Process) -> None:
    if job_id is None:
        return
    _running[job_id].discard(proc)
    if not _running[job_id]:
        _running.pop(job_id, None)


def _is_cancelled(job_id: uuid.UUID | None) -> bool:
    return job_id is not None and job_id in _cancelled


# Signals by which a resource limit stops a child: CPU time (SIGXCPU), memory (the kernel's
# SIGKILL), file size (SIGXFSZ; a Python child ignores it and gets an OSError instead).
_LIMIT_SIGNALS = (-signal.SIGXCPU, -signal.SIGKILL, -signal.SIGXFSZ)


def describe_exit(returncode: int, *, cpu_seconds: int, memory_mb: int) -> str:
    if returncode == -signal.SIGXFSZ:
        return "Processing was stopped: it wrote a file larger than its size limit."
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return (
            f"Processing was stopped: it used more than its {cpu_seconds} s CPU-time limit "
            f"or {memory_mb} MB memory limit."
        )
    if returncode < 0:
        return f"Processing crashed (signal {signal.Signals(-returncode).name})."
    return f"Processing failed (exit status {returncode})."


def judge(
    returncode: int,
    *,
    timeout: float | None,
    cancelled: bool,
    cpu_seconds: int,
    memory_mb: int,
) -> tuple[SandboxOutcome, str | None]:
    """How a child's job ended, and the sentence for it. `timeout`: the wall-clock limit when
    it was overrun (None when not). A timeout wins over a cancel, a cancel over the exit."""
    if timeout is not None:
        return (
            SandboxOutcome.TIMEOUT,
            f"Processing took longer than the {timeout:g} s time limit and was stopped.",
        )
    if cancelled:
        return SandboxOutcome.CANCELLED, CANCELLED
    if returncode == 0:
        return SandboxOutcome.OK, None
    sentence = describe_exit(returncode, cpu_seconds=cpu_seconds, memory_mb=memory_mb)
    if returncode in _LIMIT_SIGNALS:
        return SandboxOutcome.KILLED, sentence
    return SandboxOutcome.FAILED, sentence


def _decode(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace")


@dataclass(frozen=True)
class _Job:
    """One job's parameters, as run_sandboxed was given them."""

    argv: Sequence[str]
    job_id: uuid.UUID | None
    timeout: float
    cpu_seconds: int
    memory_mb: int
    on_line: OnLine | None
    env: dict[str, str] | None
    stdin: bytes | None
    child_limits: ChildLimits | None

    def result(self, returncode: int, stderr: bytes, *, timed_out: bool) -> SandboxResult:
        outcome, failure = judge(
            returncode,
            timeout=self.timeout if timed_out else None,
            cancelled=_is_cancelled(self.job_id),
            cpu_seconds=self.cpu_seconds,
            memory_mb=self.memory_mb,
        )
        return SandboxResult(returncode, _decode(stderr), failure, outcome)


async def run_sandboxed(
    argv: Sequence[str],
    *,
    job_id: uuid.UUID | None,
    timeout: float,
    cpu_seconds: int,
    memory_mb: int,
    on_line: OnLine | None = None,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    warm: WarmPool | None = None,
    child_limits: ChildLimits | None = None,
) -> SandboxResult:
    """Run argv; feed each stdout line to on_line as it arrives. Never raises for child failure.

    With `warm`, a child of that pool takes the job (the pool was made with the same argv and
    limits). A pool that reuses its children gives the job to an idle one, or starts one for
    it, and takes the child back afterwards when it may serve again; a one-job-per-child pool
    hands out a ready child or, without one, the job runs in a new child of argv.
    `child_limits` (default: ChildLimits()) are those of a child started for this job; a
    pool's children have the pool's.
    """
    if _is_cancelled(job_id):
        return SandboxResult(-signal.SIGKILL, "", CANCELLED, SandboxOutcome.CANCELLED)
    if child_limits is None and warm is not None:
        child_limits = warm.child_limits
    job = _Job(argv, job_id, timeout, cpu_seconds, memory_mb, on_line, env, stdin, child_limits)
    if warm is None:
        return await _run_once(None, job)
    warm.busy += 1  # counted against the pool's max_children until this job ends
    child: Child | None = None
    keep = False
    try:
        if not warm.reuses:
            return await _run_once(warm.take(), job)
        if not warm.accepts(cpu_seconds=cpu_seconds, memory_mb=memory_mb):
            return await _run_once(None, job)  # other limits than the pool's children have
        child = await warm.acquire()
        result, keep = await _run_job(child, job)
        return result
    finally:
        warm.busy -= 1
        if child is not None and not warm.give_back(child, keep=keep):
            await child.retire()
        warm.fill()


async def _exchange(child: Child, job: _Job) -> bool | None:
    """Send a reused child its job and pass its lines on until its end-of-job mark; returns
    the mark's reuse flag, None when the child exited without one."""
    proc = child.proc
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    payload = job.stdin or b""

    async def feed() -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(b"%d %d\n" % (len(payload), job.cpu_seconds) + payload)
            await stdin.drain()

    async def until_end() -> bool | None:
        while line := await stdout.readline():
            # Exact bytes: a record of the job's own (a JSON object with more keys, a page of
            # text) cannot be taken for a mark, and long lines compare in O(1).
            if line == END_OF_JOB:
                return True
            if line == END_OF_LAST_JOB:
                return False
            if job.on_line is not None:
                await job.on_line(line)
        await proc.wait()
        return None

    _, mark = await asyncio.gather(feed(), until_end())
    return mark


async def _run_job(child: Child, job: _Job) -> tuple[SandboxResult, bool]:
    """One job in a reused child; returns the result and whether the child may serve again."""
    proc = child.proc
    child.jobs += 1
    _register(job.job_id, proc)
    mark: bool | None = None
    timed_out = False
    try:
        try:
            async with asyncio.timeout(job.timeout):
                mark = await _exchange(child, job)
        except TimeoutError:
            timed_out = True
    except BaseException:
        kill(proc)  # the caller is gone (cancelled) or on_line failed: the child's work is moot
        raise
    finally:
        # From here on kill_job(job_id) no longer reaches this child: its job is over.
        _unregister(job.job_id, proc)
    if mark is not None and not timed_out:
        # The job is done. Its stderr is the segment up to the stderr mark; if that is late
        # (best effort), whatever came is reported and the child is not reused, so a late mark
        # cannot shift the next job's stderr.
        result = job.result(0, b"", timed_out=False)
        segment = await child.job_stderr()
        keep = mark and segment is not None and result.ok and child.alive
        if keep:
            await child.clear_tmp()
        else:
            rest = await child.retire()
            if segment is None:
                segment = rest
        result.stderr = _decode(segment or b"")
        return result, keep
    # Stopped (timeout, kill) or ended on its own without finishing the job's protocol.
    stderr = await child.retire()
    rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return job.result(rc, stderr, timed_out=timed_out), False


async def _start(job: _Job) -> Child:
    return await start_child(
        job.argv,
        preexec=limits(job.cpu_seconds, job.memory_mb, extra=job.child_limits),
        env=child_environment(os.environ, {**(job.env or {}), CPU_ENV: str(job.cpu_seconds)}),
        stdin=job.stdin is not None,
        serves_jobs=False,
        run_as=job.child_limits.run_as if job.child_limits is not None else None,
    )


async def _run_once(child: Child | None, job: _Job) -> SandboxResult:
    """One job in a one-job child (started here unless given): stdin up to EOF, then exit."""
    if child is None:
        child = await _start(job)
    proc = child.proc
    _register(job.job_id, proc)

    async def pump_stdout() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if job.on_line is not None:
                await job.on_line(line)

    async def feed_stdin() -> None:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if job.stdin is not None:
                    proc.stdin.write(job.stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

    timed_out = False
    try:
        async with asyncio.timeout(job.timeout):
            await asyncio.gather(feed_stdin(), pump_stdout(), proc.wait())
    except TimeoutError:
        kill(proc)
        timed_out = True
    except BaseException:
        kill(proc)
        raise
    finally:
        stderr = await child.retire()
        _unregister(job.job_id, proc)
    rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    return job.result(rc, stderr, timed_out=timed_out)
