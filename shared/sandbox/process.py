"""A sandboxed child process: the rlimits it starts under, and the reader of its stderr."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import resource
import shutil
import signal
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.sandbox.identity import SandboxUser, resolve_sandbox_user
from shared.sandbox.protocol import STDERR_END_OF_JOB

if TYPE_CHECKING:
    from shared.settings import Settings

# A line of child output can hold a whole page of text.
STREAM_LIMIT = 256 * 1024 * 1024
# Stderr kept per job (the rest is read and dropped, so a chatty child never blocks).
STDERR_KEEP = 64 * 1024
# How long the parent waits for the stderr mark once the stdout mark is in: it was written
# first, so it is normally there at once; a child whose mark does not come is not reused.
STDERR_MARK_GRACE = 5.0


@dataclass(frozen=True)
class ChildLimits:
    """What a child may do besides using CPU time and memory (those are per job)."""

    # RLIMIT_FSIZE: the largest file it may write (a rendered page is a few MB).
    file_mb: int = 512
    # RLIMIT_NOFILE: descriptors it may hold open at once.
    open_files: int = 256
    # RLIMIT_NPROC: processes and threads of the child's user at which it may not start more.
    # The kernel counts every process of that user and does not enforce it for root.
    processes: int = 256
    # A network namespace of its own (no interface but a down loopback), where the kernel
    # allows it (root or CAP_SYS_ADMIN); elsewhere the child keeps the service's network.
    isolate_network: bool = True
    # The user the child runs as (DOCPIPE_SANDBOX_USER; None: the service's own). It is
    # switched to last, after the steps that need privileges, and for good: real, effective
    # and saved ids, no supplementary groups, and no way back through set-id programs.
    run_as: SandboxUser | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> ChildLimits:
        return cls(
            file_mb=settings.sandbox_file_mb,
            open_files=settings.sandbox_open_files,
            processes=settings.sandbox_processes,
            isolate_network=settings.sandbox_isolate_network,
            run_as=resolve_sandbox_user(settings.sandbox_user),
        )


_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """libc, loaded in the parent: the child calls into it between fork and exec."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _unshare() -> Callable[[int], int] | None:
    libc = _libc()
    function: Callable[[int], int] | None = getattr(libc, "unshare", None)
    return function


def _become(user: SandboxUser) -> None:
    """In the child before exec: be `user` for good (the privileged steps are done)."""
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    libc = _libc()
    if libc is not None:  # set-id programs can no longer raise its privileges
        libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.umask(0o077)


def limits(
    cpu_seconds: int,
    memory_mb: int,
    cpu_hard: int | None = None,
    extra: ChildLimits | None = None,
) -> Callable[[], None]:
    """The function the child runs before exec: its own process group and its rlimits."""
    hard = cpu_seconds + 1 if cpu_hard is None else max(cpu_hard, cpu_seconds + 1)
    extra = extra or ChildLimits()
    unshare = _unshare() if extra.isolate_network else None

    def apply() -> None:
        os.setsid()  # own process group, so a kill takes grandchildren too
        if unshare is not None:
            unshare(_CLONE_NEWNET)  # refused without the privilege: the network stays
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, hard))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        _lower(resource.RLIMIT_FSIZE, extra.file_mb * 1024 * 1024)
        _lower(resource.RLIMIT_NOFILE, extra.open_files)
        _lower(resource.RLIMIT_NPROC, extra.processes)
        if extra.run_as is not None:
            _become(extra.run_as)

    return apply


def _lower(kind: int, value: int) -> None:
    """Set both limits to `value`, or to the hard limit already there when that is lower (an
    unprivileged process cannot raise it)."""
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def kill(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's whole process group, unless it was reaped already."""
    if proc.returncode is not None:
        return  # reaped: its pid (and process group id) may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def start_child(
    argv: Sequence[str],
    *,
    preexec: Callable[[], None],
    env: dict[str, str],
    stdin: bool,
    serves_jobs: bool,
    run_as: SandboxUser | None = None,
) -> Child:
    """Start a sandboxed process with a temporary folder of its own (TMPDIR, also its HOME
    when it runs as the sandbox user), emptied after each of its jobs and removed with it.
    `env`: the child's whole environment (identity.child_environment)."""
    tmpdir = tempfile.mkdtemp(prefix="docpipe-child-")
    env = {**env, "TMPDIR": tmpdir}
    if run_as is not None:
        env["HOME"] = tmpdir  # nothing the child starts writes into the service's home
    try:
        if run_as is not None:
            os.chown(tmpdir, run_as.uid, run_as.gid)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=preexec,
            env=env,
            limit=STREAM_LIMIT,
        )
    except BaseException:
        os.rmdir(tmpdir)
        raise
    return Child(proc, serves_jobs=serves_jobs, tmpdir=tmpdir)


def _empty(folder: str, *, remove: bool) -> None:
    """Delete what is in the folder (and the folder itself with remove=True)."""
    if remove:
        shutil.rmtree(folder, ignore_errors=True)
        return
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


class Child:
    """A sandboxed process and the reader of its stderr, which runs for the process's life:
    the pipe is drained while the child is idle or busy, so the child never blocks on it."""

    def __init__(
        self, proc: asyncio.subprocess.Process, *, serves_jobs: bool, tmpdir: str | None = None
    ) -> None:
        self.proc = proc
        self.serves_jobs = serves_jobs
        self.tmpdir = tmpdir
        self.jobs = 0
        self._kept = bytearray()
        self._carry = b""  # the tail of the last read: it may hold the start of a mark
        self._segments: asyncio.Queue[bytes] = asyncio.Queue()  # one per finished job
        self._stderr_task = asyncio.ensure_future(self._read_stderr())

    def _keep(self, data: bytes) -> None:
        room = STDERR_KEEP - len(self._kept)
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
            return await asyncio.wait_for(self._segments.get(), STDERR_MARK_GRACE)
        except TimeoutError:
            return None

    async def clear_tmp(self) -> None:
        """A job is over, whatever its outcome: the files it left in TMPDIR go."""
        if self.tmpdir is None:
            return
        with os.scandir(self.tmpdir) as entries:
            left = next(entries, None) is not None
        if left:  # most jobs leave nothing: no thread for an empty folder
            await asyncio.to_thread(_empty, self.tmpdir, remove=False)

    async def retire(self) -> bytes:
        """Kill the process (if alive), reap it and remove its TMPDIR; returns the stderr not
        yet handed out."""
        kill(self.proc)
        await self.proc.wait()
        await asyncio.gather(self._stderr_task, return_exceptions=True)
        if self.tmpdir is not None:
            await asyncio.to_thread(_empty, self.tmpdir, remove=True)
        rest = bytes(self._kept)
        self._kept.clear()
        return rest

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None
