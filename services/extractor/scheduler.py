"""A local scheduler for extraction children: at most `slots` run at once, and when a slot
frees the waiting document with the highest priority, then the smallest file, goes next.

The extractor holds a few documents beyond those it runs (its prefetch: concurrency plus
extractor_prefetch_spare) and lets this pick among them; the queue itself is ordered by
priority in RabbitMQ. The prefetch stays small so that extractor replicas share the queue: a
replica starting beside a busy one finds the backlog still on the queue (decision 1070).
Waiting ages a document (its size counts for less the longer it waits), so a large one is not
starved by a steady stream of small ones. There is no ordering guarantee across jobs to keep.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class _Waiter:
    priority: int
    size: int
    seq: int
    since: float
    future: asyncio.Future[None] = field(repr=False)

    def key(self, now: float, aging_seconds: float) -> tuple[int, float, int]:
        waited = max(0.0, now - self.since)
        return (-self.priority, self.size / (1.0 + waited / aging_seconds), self.seq)


class Scheduler:
    def __init__(self, slots: int, *, aging_seconds: float = 10.0) -> None:
        self.slots = max(1, slots)
        self.aging_seconds = max(0.001, aging_seconds)
        self.running = 0
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def _grant_next(self) -> None:
        while self.running < self.slots and self._waiters:
            now = time.monotonic()
            best = min(self._waiters, key=lambda w: w.key(now, self.aging_seconds))
            self._waiters.remove(best)
            if best.future.done():  # cancelled while waiting
                continue
            self.running += 1
            best.future.set_result(None)

    async def acquire(self, *, priority: int = 0, size: int = 0) -> None:
        if self.running < self.slots and not self._waiters:
            self.running += 1
            return
        waiter = _Waiter(
            priority,
            size,
            next(self._seq),
            time.monotonic(),
            asyncio.get_running_loop().create_future(),
        )
        self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release()  # granted, but the caller went away before using it
            raise

    def release(self) -> None:
        self.running -= 1
        self._grant_next()

    @asynccontextmanager
    async def slot(self, *, priority: int = 0, size: int = 0) -> AsyncIterator[None]:
        await self.acquire(priority=priority, size=size)
        try:
            yield
        finally:
            self.release()
