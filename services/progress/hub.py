"""In-process fan-out of progress updates to WebSocket clients, per job.

Publishing never waits: each subscriber has a bounded queue, and one that is full is dropped
(marked overflowed) so a slow client cannot hold up the others; it reconnects with ?after=.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

DEFAULT_QUEUE_SIZE = 256


class Subscription:
    def __init__(self, hub: Hub, job_id: uuid.UUID, maxsize: int) -> None:
        self.hub = hub
        self.job_id = job_id
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, update: dict[str, Any]) -> bool:
        """Queue without waiting; False (and dropped) when the client is not keeping up."""
        try:
            self.queue.put_nowait(update)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    async def get(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next update, or None after `timeout` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.hub.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Hub:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subs: dict[uuid.UUID, set[Subscription]] = defaultdict(set)

    def subscribe(self, job_id: uuid.UUID) -> Subscription:
        sub = Subscription(self, job_id, self.queue_size)
        self._subs[job_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.job_id]

    def publish(self, job_id: uuid.UUID, update: dict[str, Any]) -> None:
        for sub in list(self._subs.get(job_id, ())):
            if not sub.offer(update):
                self.unsubscribe(sub)

    def subscribers(self, job_id: uuid.UUID) -> int:
        return len(self._subs.get(job_id, ()))
