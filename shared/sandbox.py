"""Run CPU-heavy or hostile-input work in a child process with rlimits and a wall-clock timeout.

The event loop only awaits the child's pipes. A child that overruns its CPU time, address space
or wall clock is killed, and the caller gets a reason a person can read. Running children are
registered per job, so cancelling a job can kill its work at once.

A WarmPool keeps pre-started children (same rlimits, own process group) blocked on stdin, so
the interpreter start and imports are paid before a job arrives. Starting a child costs more
CPU than extracting a typical document (~0.15 CPU-s against a few hundredths), so a pool's
child serves several jobs one after another (`max_jobs_per_child`, like a process pool's
max-tasks-per-child; 1 = one job per process). It is never reused after anything went wrong:
a job that was killed, timed out, was cancelled or ended without its end-of-job mark, or whose
child says it must not go on (after a fatal error: the child decides), ends the process, and
the pool starts another when it needs one. What libraries keep in memory between jobs (caches,
a grown heap) is bounded by the cap on jobs per child and by the child's own checks.

Every guarantee holds per job: the address-space limit is the process's; the CPU limit is
re-armed when each job arrives (`apply_job_cpu_limit`: the soft limit becomes CPU used so far
plus the job's allowance); the wall-clock timeout and `kill_job` apply to the process while it
works for that job, and only then.

The job protocol of a reused child (the pool sets REUSE_ENV in its environment):
- stdin: per job a header line `b"<payload bytes> <cpu seconds>\\n"`, then the payload (the
  bytes a one-job child would read up to EOF). EOF instead of a header: no more jobs, exit.
- stdout: the job's lines, then END_OF_JOB (may be reused) or END_OF_LAST_JOB (must not be).
  These two lines are the sandbox's: `on_line` never sees them.
- stderr: the job's stderr, then STDERR_END_OF_JOB, written before the stdout mark; so each
  job's SandboxResult.stderr holds what was written during that job (and, for a child's first
  job, during its start-up).
`read_job` and `end_job` are the child's side of it; `serve_jobs` is the loop over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import resource
import signal
import sys
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, BinaryIO

# A line of child output can hold a whole page of text.
_STREAM_LIMIT = 256 * 1024 * 1024
# Stderr kept per job (the rest is read and dropped, so a chatty child never blocks).
_STDERR_KEEP = 64 * 1024

# The child's side of the job protocol (see the module docstring).
REUSE_ENV = "DOCPIPE_SANDBOX_REUSE"
END_OF_JOB = b'{"type": "done", "reuse": true}\n'
END_OF_LAST_JOB = b'{"type": "done", "reuse": false}\n'
STDERR_END_OF_JOB = b"\n[docpipe sandbox: end of job]\n"
# How long the parent waits for the stderr mark once the stdout mark is in: it was written
# first, so it is normally there at once; a child whose mark does not come is not reused.
_STDERR_MARK_GRACE = 5.0
# Jobs a pool's child serves before it is replaced: bounds what a slow leak can accumulate.
DEFAULT_JOBS_PER_CHILD = 100

CANCELLED = "The job was cancelled."


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
    """Kill every child working for the job; returns how many were killed.

    A reused child is registered for a job only while it works on it: a child that has gone
    back to its pool (or on to another job) is never killed for a job it served before."""
    _cancelled.add(job_id)
    procs = list(_running.get(job_id, ()))
    for proc in procs:
        _kill(proc)
    return len(procs)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return  # reaped: its pid (and process group id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _register(job_id: uuid.UUID | None, proc: asyncio.subprocess.Process) -> None:
    if job_id is None:
        return
    _running[job_id].add(proc)
    if job_id in _cancelled:
        _kill(proc)


def _unregister(job_id: uuid.UUID | None, proc: asyncio.subprocess.Process) -> None:
    if job_id is None:
        return
    _running[job_id].discard(proc)
    if not _running[job_id]:
        _running.pop(job_id, None)


# The child reads its per-job CPU allowance from here (see apply_job_cpu_limit).
CPU_ENV = "DOCPIPE_SANDBOX_CPU_SECONDS"
# CPU time a warm child may spend starting (interpreter, imports) on top of its job's limit.
WARM_STARTUP_CPU_SECONDS = 30


def serving_jobs() -> bool:
    """In the child: whether it was started by a pool that reuses children (job protocol)."""
    return os.environ.get(REUSE_ENV) == "1"


def apply_job_cpu_limit(seconds: int | None = None) -> None:
    """In the child, once a job has arrived: allow `seconds` (default: CPU_ENV) of CPU from now.

    The soft limit becomes (CPU used so far + the allowance), never above the hard limit fixed
    at spawn; going over it ends the process (SIGXCPU). A one-job child lowers its hard limit
    to match. A reused child keeps its hard limit, which was set at spawn to cover all the jobs
    it may serve (an unprivileged process cannot raise it again), and re-arms the soft limit
    for each job. Without an allowance this does nothing.
    """
    raw = seconds if seconds is not None else os.environ.get(CPU_ENV)
    if not raw:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = math.ceil(usage.ru_utime + usage.ru_stime)
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + int(raw)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard - 1)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard if serving_jobs() else soft + 1))


def read_job(stream: BinaryIO) -> tuple[bytes, int] | None:
    """In a reused child: the next job's (payload, CPU seconds), or None when there is none."""
    header = stream.readline()
    if not header.strip():
        return None
    size, cpu_seconds = (int(part) for part in header.split())
    payload = stream.read(size)
    if len(payload) < size:
        return None  # the parent went away in the middle of a job
    return payload, cpu_seconds


def end_job(out: IO[str], *, reuse: bool) -> None:
    """In a reused child: mark the end of a job on stderr, then on the protocol stream `out`.
    With reuse=False the parent ends the process anyway; the child may as well exit."""
    sys.stderr.flush()
    os.write(2, STDERR_END_OF_JOB)
    out.write((END_OF_JOB if reuse else END_OF_LAST_JOB).decode())
    out.flush()


def serve_jobs(out: IO[str], run_job: Callable[[bytes], bool], *, max_rss_mb: float) -> int:
    """In a reused child: take jobs until stdin ends. Each job's CPU allowance is armed when it
    arrives; `run_job(payload)` writes the job's records to `out` and says whether this process
    may take another (never after a fatal error); holding `max_rss_mb` or more ends it too."""
    while (job := read_job(sys.stdin.buffer)) is not None:
        payload, cpu_seconds = job
        # The job is here: from now on the child gets the full CPU-time allowance for it.
        apply_job_cpu_limit(cpu_seconds)
        reuse = run_job(payload) and rss_mb() < max_rss_mb
        end_job(out, reuse=reuse)
        if not reuse:
            break
    return 0


def private_stdout() -> IO[str]:
    """In the child: keep the protocol stream to ourselves; all else printed goes to stderr."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def rss_mb() -> float:
    """In the child: its resident memory now, in MB (0 where /proc is not there)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def _limits(cpu_seconds: int, memory_mb: int, cpu_hard: int | None = None) -> Callable[[], None]:
    hard = cpu_seconds + 1 if cpu_hard is None else max(cpu_hard, cpu_seconds + 1)

    def apply() -> None:
        os.setsid()  # own process group, so a kill takes grandchildren too
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, hard))
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


def _timed_out(timeout: float) -> str:
    return f"Processing took longer than the {timeout:g} s time limit and was stopped."


class _Child:
    """A sandboxed process and the reader of its stderr, which runs for the process's life:
    the pipe is drained while the child is idle or busy, so the child never blocks on it."""

    def __init__(self, proc: asyncio.subprocess.Process, *, serves_jobs: bool) -> None:
        self.proc = proc
        self.serves_jobs = serves_jobs
        self.jobs = 0
        self._kept = bytearray()
        self._carry = b""  # the tail of the last read: it may hold the start of a mark
        self._segments: asyncio.Queue[bytes] = asyncio.Queue()  # one per finished job
        self._stderr_task = asyncio.ensure_future(self._read_stderr())

    def _keep(self, data: bytes) -> None:
        room = _STDERR_KEEP - len(self._kept)
        if room > 0 and data:
            self._kept += data[:room]

    async def _read_stderr(self) -> None:
        stream = self.proc.stderr
        if stream is None:
            return
        mark = STDERR_END_OF_JOB
        while block := await stream.read(64 * 1024):
            if not self.serves_jobs:
                self._keep(block)
                continue
            data = self._carry + block
            while (at := data.find(mark)) >= 0:
                self._keep(data[:at])
                self._segments.put_nowait(bytes(self._kept))
                self._kept.clear()
                data = data[at + len(mark) :]
            cut = max(0, len(data) - len(mark) + 1)
            self._keep(data[:cut])
            self._carry = data[cut:]
        self._keep(self._carry)
        self._carry = b""

    async def job_stderr(self) -> bytes | None:
        """The stderr of the job that just ended (its mark is on stdout), None if it is late."""
        try:
            return await asyncio.wait_for(self._segments.get(), _STDERR_MARK_GRACE)
        except TimeoutError:
            return None

    async def retire(self) -> bytes:
        """Kill the process (if alive), reap it; returns the stderr not yet handed out."""
        _kill(self.proc)
        await self.proc.wait()
        await asyncio.gather(self._stderr_task, return_exceptions=True)
        rest = bytes(self._kept)
        self._kept.clear()
        return rest

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None


def _decode(stderr: bytes) -> str:
    return stderr.decode("utf-8", "replace")


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

    With `warm`, a child of that pool takes the job (the pool was made with the same argv and
    limits). A pool that reuses its children gives the job to an idle one, or starts one for
    it, and takes the child back afterwards when it may serve again; a one-job-per-child pool
    hands out a ready child or, without one, the job runs in a new child of argv.
    """
    if job_id is not None and job_id in _cancelled:
        return SandboxResult(returncode=-signal.SIGKILL, stderr="", failure=CANCELLED)

    async def once(child: _Child | None) -> SandboxResult:
        return await _run_once(
            child, argv, job_id=job_id, timeout=timeout, cpu_seconds=cpu_seconds,
            memory_mb=memory_mb, on_line=on_line, env=env, stdin=stdin,
        )  # fmt: skip

    if warm is None:
        return await once(None)
    warm.busy += 1  # counted against the pool's max_children until this job ends
    child: _Child | None = None
    keep = False
    try:
        if not warm.reuses:
            return await once(warm.take())
        if not warm.accepts(cpu_seconds=cpu_seconds, memory_mb=memory_mb):
            return await once(None)  # other limits than the pool's children have: a cold child
        child = await warm.acquire()
        result, keep = await _run_job(
            child, job_id=job_id, timeout=timeout, cpu_seconds=cpu_seconds,
            memory_mb=memory_mb, on_line=on_line, stdin=stdin,
        )  # fmt: skip
        return result
    finally:
        warm.busy -= 1
        if child is not None and not warm.give_back(child, keep=keep):
            await child.retire()
        warm.fill()


async def _run_job(
    child: _Child,
    *,
    job_id: uuid.UUID | None,
    timeout: float,
    cpu_seconds: int,
    memory_mb: int,
    on_line: Callable[[bytes], Awaitable[None]] | None,
    stdin: bytes | None,
) -> tuple[SandboxResult, bool]:
    """One job in a reused child; returns the result and whether the child may serve again."""
    proc = child.proc
    assert proc.stdin is not None and proc.stdout is not None
    child.jobs += 1
    payload = stdin or b""

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(b"%d %d\n" % (len(payload), cpu_seconds) + payload)
            await proc.stdin.drain()

    async def until_end() -> bool | None:
        """The end-of-job mark's reuse flag; None when the child exited without one."""
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            # Exact bytes: a record of the job's own (a JSON object with more keys, a page of
            # text) cannot be taken for a mark, and long lines compare in O(1).
            if line == END_OF_JOB:
                return True
            if line == END_OF_LAST_JOB:
                return False
            if on_line is not None:
                await on_line(line)
        await proc.wait()
        return None

    _register(job_id, proc)
    mark: bool | None = None
    failure: str | None = None
    try:
        try:
            async with asyncio.timeout(timeout):
                _, mark = await asyncio.gather(feed(), until_end())
        except TimeoutError:
            failure = _timed_out(timeout)
    except BaseException:
        _kill(proc)  # the caller is gone (cancelled) or on_line failed: the child's work is moot
        raise
    finally:
        # From here on kill_job(job_id) no longer reaches this child: its job is over.
        _unregister(job_id, proc)
    # A kill can only have happened while registered, and kill_job marks the job first.
    cancelled = job_id is not None and job_id in _cancelled
    if mark is not None and failure is None:
        # The job is done. Its stderr is the segment up to the stderr mark; if that is late
        # (best effort), whatever came is reported and the child is not reused, so a late mark
        # cannot shift the next job's stderr.
        segment = await child.job_stderr()
        keep = mark and segment is not None and not cancelled and child.alive
        if not keep:
            rest = await child.retire()
            if segment is None:
                segment = rest
        return SandboxResult(0, _decode(segment or b""), CANCELLED if cancelled else None), keep
    # Stopped (timeout, kill) or ended on its own without finishing the job's protocol.
    stderr = await child.retire()
    rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if failure is None and cancelled:
        failure = CANCELLED
    if failure is None and rc != 0:
        failure = describe_exit(rc, cpu_seconds=cpu_seconds, memory_mb=memory_mb)
    return SandboxResult(returncode=rc, stderr=_decode(stderr), failure=failure), False


async def _run_once(
    child: _Child | None,
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
    """One job in a one-job child (started here unless given): stdin up to EOF, then exit."""
    if child is None:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_limits(cpu_seconds, memory_mb),
            env={**os.environ, **(env or {}), CPU_ENV: str(cpu_seconds)},
            limit=_STREAM_LIMIT,
        )
        child = _Child(proc, serves_jobs=False)
    proc = child.proc
    _register(job_id, proc)

    async def pump_stdout() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            if on_line is not None:
                await on_line(line)

    async def feed_stdin() -> None:
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if stdin is not None:
                    proc.stdin.write(stdin)
                    await proc.stdin.drain()
                proc.stdin.close()

    failure: str | None = None
    try:
        await asyncio.wait_for(
            asyncio.gather(feed_stdin(), pump_stdout(), proc.wait()), timeout=timeout
        )
    except TimeoutError:
        _kill(proc)
        failure = _timed_out(timeout)
    except BaseException:
        _kill(proc)
        raise
    finally:
        stderr = await child.retire()
        _unregister(job_id, proc)
    rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    if failure is None and job_id is not None and job_id in _cancelled:
        failure = CANCELLED
    if failure is None and rc != 0:
        failure = describe_exit(rc, cpu_seconds=cpu_seconds, memory_mb=memory_mb)
    return SandboxResult(returncode=rc, stderr=_decode(stderr), failure=failure)


class WarmPool:
    """Pre-started sandboxed children of one argv, waiting on stdin for their job.

    With `max_jobs_per_child` > 1 (the default) the children speak the job protocol (module
    docstring) and serve up to that many jobs each: `run_sandboxed` takes an idle child (or
    starts one when none is idle) and gives it back when the job ended cleanly. With 1, a
    child does one job and exits: `take()` hands out a ready child (or None: the caller starts
    one cold) and a replacement is started in the background.

    The pool aims at `size` children of its own, idle or out on a job it will come back from;
    at most `size` are kept idle. An idle child whose parent dies reads EOF on stdin and exits.
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
        max_jobs_per_child: int = DEFAULT_JOBS_PER_CHILD,
    ) -> None:
        """`max_children`: no child is kept or pre-started while this many children of the
        pool's users (warm or cold, counted in `busy`) plus idle ones would be alive: memory is
        bounded as before; a child going back to the pool counts as the one it was."""
        self.argv = tuple(argv)
        self.size = max(0, size)
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.env = env or {}
        self.startup_cpu_seconds = startup_cpu_seconds
        self.max_jobs_per_child = max(1, max_jobs_per_child)
        self._idle: list[_Child] = []
        self._spawning = 0
        self._out = 0  # reusable children out on a job: they are expected back
        self._spawned = asyncio.Event()  # set when _refill adds a child or ends (see acquire)
        self._refill_task: asyncio.Task[None] | None = None
        self._closed = False
        self.max_children = max_children
        self.busy = 0

    @property
    def reuses(self) -> bool:
        return self.max_jobs_per_child > 1

    def accepts(self, *, cpu_seconds: int, memory_mb: int) -> bool:
        """Whether a job with these limits fits this pool's children: their address-space
        limit is fixed at spawn, and their CPU budget was sized for this pool's allowance."""
        return memory_mb == self.memory_mb and cpu_seconds <= self.cpu_seconds

    def _room(self) -> bool:
        """Whether one more live child stays within max_children."""
        alive = len(self._idle) + self._spawning
        return self.max_children is None or self.busy + alive < self.max_children

    def _wanted(self) -> bool:
        if self._closed or len(self._idle) + self._spawning + self._out >= self.size:
            return False
        return self._room()

    async def _spawn(self) -> _Child:
        cpu_hard = None
        env = {**os.environ, **self.env, CPU_ENV: str(self.cpu_seconds)}
        if self.reuses:
            # The hard limit must cover every job the child may serve: it cannot be raised
            # again. The soft limit (re-armed per job) is what stops a job that overruns.
            cpu_hard = self.startup_cpu_seconds + self.max_jobs_per_child * (self.cpu_seconds + 1)
            env[REUSE_ENV] = "1"
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_limits(
                self.cpu_seconds + self.startup_cpu_seconds, self.memory_mb, cpu_hard
            ),
            env=env,
            limit=_STREAM_LIMIT,
        )
        return _Child(proc, serves_jobs=self.reuses)

    async def _refill(self) -> None:
        try:
            while self._wanted():
                self._spawning += 1
                try:
                    child = await self._spawn()
                except Exception:  # out of pids or memory: run cold until the next take
                    return
                finally:
                    self._spawning -= 1
                if self._closed:
                    await child.retire()
                    return
                self._idle.append(child)
                self._spawned.set()
        finally:
            self._spawned.set()

    def _refilling(self) -> bool:
        return self._refill_task is not None and not self._refill_task.done()

    def fill(self) -> None:
        """Start children in the background until `size` are idle or out on a job (needs a
        running loop)."""
        if not self._wanted():
            return
        if not self._refilling():
            self._refill_task = asyncio.get_running_loop().create_task(self._refill())

    def take(self) -> _Child | None:
        """A ready child (or None), counted as out until give_back."""
        child = None
        while self._idle:
            candidate = self._idle.pop(0)
            if candidate.alive:
                child = candidate
                break
            # Died while idle: reaped by asyncio; nothing to kill.
        if child is not None and self.reuses:
            self._out += 1
        self.fill()
        return child

    async def acquire(self) -> _Child:
        """A reusable child for a job, counted as out until give_back: an idle one, else the
        one being started in the background (a fork and exec: milliseconds; starting another
        would leave one too many), else a new one, which joins the pool afterwards if it can."""
        while (child := self.take()) is None and self._refilling():
            self._spawned.clear()
            await self._spawned.wait()
        if child is None:
            child = await self._spawn()
            self._out += 1
        return child

    def give_back(self, child: _Child, *, keep: bool) -> bool:
        """A reusable child's job is over: keep it idle when it may serve again and the pool
        has room (then True), else the caller retires it."""
        if child.serves_jobs:
            self._out -= 1
        if (
            keep
            and not self._closed
            and child.alive
            and child.jobs < self.max_jobs_per_child
            and len(self._idle) + self._spawning < self.size
            and self._room()
        ):
            self._idle.append(child)
            return True
        return False

    @property
    def idle(self) -> int:
        return len(self._idle)

    async def keep_warm(self) -> None:
        """Run for the life of a service: fill the pool now, close it when cancelled."""
        try:
            self.fill()
            await asyncio.Event().wait()
        finally:
            await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._refill_task is not None:
            self._refill_task.cancel()
            await asyncio.gather(self._refill_task, return_exceptions=True)
        idle, self._idle = self._idle, []
        for child in idle:
            _kill(child.proc)
        for child in idle:
            await child.retire()
