"""Run CPU-heavy or hostile-input work in a child process with rlimits and a wall-clock timeout.

The event loop only awaits the child's pipes. A child that overruns its CPU time, address space
or wall clock is killed, and the caller gets a reason a person can read. Running children are
registered per job, so cancelling a job can kill its work at once.

A WarmPool keeps pre-started children (same rlimits, own process group) blocked on stdin, so
the interpreter start and imports are paid before a job arrives. One job per process: a taken
child is never reused, and a fresh one is started in the background. The CPU limit of a warm
child is set at spawn with room for its start-up; the child tightens it when its job arrives
(see `apply_job_cpu_limit`), so it gets `cpu_seconds` for the job itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
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


# The child reads its per-job CPU allowance from here (see apply_job_cpu_limit).
CPU_ENV = "DOCPIPE_SANDBOX_CPU_SECONDS"
# CPU time a warm child may spend starting (interpreter, imports) on top of its job's limit.
WARM_STARTUP_CPU_SECONDS = 30


def apply_job_cpu_limit() -> None:
    """In the child, once its job has arrived: allow CPU_ENV seconds of CPU from now on.

    The soft limit becomes (CPU used so far + the allowance), never above the hard limit
    fixed at spawn; the hard limit is lowered to match. Without CPU_ENV this does nothing.
    """
    raw = os.environ.get(CPU_ENV)
    if not raw:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + int(raw)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))


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
    warm: WarmPool | None = None,
) -> SandboxResult:
    """Run argv; feed each stdout line to on_line as it arrives. Never raises for child failure.

    With `warm`, a pre-started child of that pool takes the job when one is ready (the pool
    was made with the same argv and limits); otherwise a child is started as usual.
    """
    proc = warm.take() if warm is not None else None
    if warm is not None:
        warm.busy += 1  # counted against the pool's max_children until this child ends
    try:
        return await _run(
            proc, argv, job_id=job_id, timeout=timeout, cpu_seconds=cpu_seconds,
            memory_mb=memory_mb, on_line=on_line, env=env, stdin=stdin,
        )  # fmt: skip
    finally:
        if warm is not None:
            warm.busy -= 1
            warm.fill()


async def _run(
    proc: asyncio.subprocess.Process | None,
    argv: Sequence[str],
    *,
    job_id: uuid.UUID | None,
    timeout: float,
    cpu_seconds: int,
    memory_mb: int,
    on_line: Callable[[bytes], Awaitable[None]] | None,
    env: dict[str, str] | None,
    stdin: bytes | None,
) -> SandboxResult:
    if proc is None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_limits(cpu_seconds, memory_mb),
            env={**os.environ, **(env or {}), CPU_ENV: str(cpu_seconds)},
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
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if stdin is not None:
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


class WarmPool:
    """Pre-started sandboxed children of one argv, waiting on stdin for their job.

    `take()` hands out a ready child (or None: the caller starts one cold) and starts a
    replacement in the background. Children are never reused: one document per process.
    An idle child whose parent dies reads EOF on stdin and exits.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        size: int,
        cpu_seconds: int,
        memory_mb: int,
        env: dict[str, str] | None = None,
        startup_cpu_seconds: int = WARM_STARTUP_CPU_SECONDS,
        max_children: int | None = None,
    ) -> None:
        """`max_children`: no warm child is kept while this many children of the pool's
        users (warm or cold, counted in `busy`) plus idle ones would be alive: memory is
        bounded as before, and a child is pre-started only when a slot is likely free."""
        self.argv = tuple(argv)
        self.size = max(0, size)
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.env = env or {}
        self.startup_cpu_seconds = startup_cpu_seconds
        self._idle: list[asyncio.subprocess.Process] = []
        self._spawning = 0
        self._refill_task: asyncio.Task[None] | None = None
        self._closed = False
        self.max_children = max_children
        self.busy = 0

    def _wanted(self) -> bool:
        alive = len(self._idle) + self._spawning
        if self._closed or alive >= self.size:
            return False
        return self.max_children is None or self.busy + alive < self.max_children

    async def _spawn(self) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_limits(self.cpu_seconds + self.startup_cpu_seconds, self.memory_mb),
            env={**os.environ, **self.env, CPU_ENV: str(self.cpu_seconds)},
            limit=_STREAM_LIMIT,
        )

    async def _refill(self) -> None:
        while self._wanted():
            self._spawning += 1
            try:
                proc = await self._spawn()
            except Exception:  # out of pids or memory: run cold until the next take
                return
            finally:
                self._spawning -= 1
            if self._closed:
                _kill(proc)
                await proc.wait()
                return
            self._idle.append(proc)

    def fill(self) -> None:
        """Start children in the background until `size` are idle (needs a running loop)."""
        if not self._wanted():
            return
        if self._refill_task is None or self._refill_task.done():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    def take(self) -> asyncio.subprocess.Process | None:
        proc = None
        while self._idle:
            candidate = self._idle.pop(0)
            if candidate.returncode is None:
                proc = candidate
                break
        self.fill()
        return proc

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def close(self) -> None:
        self._closed = True
        if self._refill_task is not None:
            self._refill_task.cancel()
            await asyncio.gather(self._refill_task, return_exceptions=True)
        idle, self._idle = self._idle, []
        for proc in idle:
            _kill(proc)
        for proc in idle:
            await proc.wait()
