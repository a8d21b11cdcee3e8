"""Pre-started sandboxed children of one argv, waiting on stdin for their job."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from shared.sandbox.identity import child_environment
from shared.sandbox.process import Child, ChildLimits, kill, limits, start_child
from shared.sandbox.protocol import CPU_ENV, REUSE_ENV

# CPU time a warm child may spend starting (interpreter, imports) on top of its job's limit.
WARM_STARTUP_CPU_SECONDS = 30
# Jobs a pool's child serves before it is replaced: bounds what a slow leak can accumulate.
DEFAULT_JOBS_PER_CHILD = 100


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
        child_limits: ChildLimits | None = None,
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
        self.child_limits = child_limits or ChildLimits()
        self._idle: list[Child] = []
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

    async def _spawn(self) -> Child:
        cpu_hard = None
        env = child_environment(os.environ, {**self.env, CPU_ENV: str(self.cpu_seconds)})
        if self.reuses:
            # The hard limit must cover every job the child may serve: it cannot be raised
            # again. The soft limit (re-armed per job) is what stops a job that overruns.
            cpu_hard = self.startup_cpu_seconds + self.max_jobs_per_child * (self.cpu_seconds + 1)
            env[REUSE_ENV] = "1"
        preexec = limits(
            self.cpu_seconds + self.startup_cpu_seconds, self.memory_mb, cpu_hard, self.child_limits
        )
        return await start_child(
            self.argv,
            preexec=preexec,
            env=env,
            stdin=True,
            serves_jobs=self.reuses,
            run_as=self.child_limits.run_as,
        )

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

    def take(self) -> Child | None:
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

    async def acquire(self) -> Child:
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

    def give_back(self, child: Child, *, keep: bool) -> bool:
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
            kill(child.proc)
        for child in idle:
            await child.retire()
