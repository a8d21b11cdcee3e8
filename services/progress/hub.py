"""In-process fan-out of progress updates to WebSocket clients, per job (and, for the admin
page, fleet-wide: subscribe_all() sees every job's updates).

Publishing never waits: each subscriber has a bounded queue, and one that is full is dropped
(marked overflowed) so a slow client cannot hold up the others; it reconnects with ?after=.

Across progress replicas: `publish` is for what this replica committed; it reaches the local
clients at once and is handed to `share` (the replica feed, replica_feed.py, sends it to the
other replicas). `receive` is for what another replica committed: local clients only. Each job
stream orders by seq itself (seq_stream.py: duplicates dropped, gaps read from job_updates);
the fleet stream gets a job's update only if its seq is newer than the last one it got.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

from services.progress.arithmetic import Snapshot
from services.progress.batches import StreamMessage

Message = TypeVar("Message", Snapshot, StreamMessage)

DEFAULT_QUEUE_SIZE = 256
# How many (job, seq) -> event time entries are kept for measuring push lag.
EVENT_TIMES_KEPT = 10_000
# A fleet-wide subscriber sees every job's updates, so it gets more room before it is dropped.
FLEET_QUEUE_SIZE = 4096
# How many jobs' latest seq the fleet stream remembers (to drop stale and repeated updates).
FLEET_SEQS_KEPT = 10_000

# What a replica does with an update it committed, besides its own clients: (update, when its
# event occurred as epoch seconds, if known).
ShareUpdate = Callable[[Snapshot, float | None], None]
ShareBatchMessage = Callable[[StreamMessage], None]


class _Subscriber(Generic[Message]):
    """A client's bounded queue: offering never waits, and a full queue marks it overflowed."""

    def __init__(self, maxsize: int) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self.overflowed = False

    def offer(self, message: Message) -> bool:
        """Queue without waiting; False (and dropped) when the client is not keeping up."""
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    async def get(self, timeout: float | None = None) -> Message | None:
        """The next message, or None after `timeout` seconds without one."""
        if not self.queue.empty():  # the common case under load: no timer, no extra task
            return self.queue.get_nowait()
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class Subscription(_Subscriber[Snapshot]):
    def __init__(self, hub: Hub, job_id: uuid.UUID | None, maxsize: int) -> None:
        super().__init__(maxsize)
        self.hub = hub
        self.job_id = job_id  # None: a fleet-wide subscription (every job)

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
        self._fleet: set[Subscription] = set()
        # When the event behind each recently published update occurred (epoch seconds), kept
        # beside the update so the pushed payload stays exactly the snapshot contract.
        self._event_times: OrderedDict[tuple[uuid.UUID, int], float] = OrderedDict()
        # The JSON text of recently published updates: serialised once, sent to every client.
        self._texts: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._fleet_seqs: OrderedDict[uuid.UUID, int] = OrderedDict()
        self.share: ShareUpdate | None = None  # set by the replica feed

    def subscribe(self, job_id: uuid.UUID) -> Subscription:
        sub = Subscription(self, job_id, self.queue_size)
        self._subs[job_id].add(sub)
        return sub

    def subscribe_all(self, maxsize: int = FLEET_QUEUE_SIZE) -> Subscription:
        """Every job's updates, as they are published (the admin page's live stream)."""
        sub = Subscription(self, None, maxsize)
        self._fleet.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.job_id is None:
            self._fleet.discard(sub)
            return
        subs = self._subs.get(sub.job_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.job_id]

    def publish(
        self, job_id: uuid.UUID, update: Snapshot, occurred_at: datetime | None = None
    ) -> None:
        """An update this replica committed: to its clients, and shared with the others."""
        at = None if occurred_at is None else occurred_at.timestamp()
        self.receive(job_id, update, at)
        if self.share is not None:
            self.share(update, at)

    def receive(
        self, job_id: uuid.UUID, update: Snapshot, occurred_at: float | None = None
    ) -> None:
        """An update for this replica's clients only (another replica committed it).
        `occurred_at`: when the event behind it occurred, epoch seconds (push-lag metric)."""
        if occurred_at is not None and job_id in self._subs:
            self._event_times[(job_id, update["seq"])] = occurred_at
            if len(self._event_times) > EVENT_TIMES_KEPT:
                self._event_times.popitem(last=False)
        for sub in list(self._subs.get(job_id, ())):
            if not sub.offer(update):
                self.unsubscribe(sub)
        if self._fleet and self._newer_for_fleet(job_id, update["seq"]):
            for sub in list(self._fleet):
                if not sub.offer(update):
                    self.unsubscribe(sub)

    def _newer_for_fleet(self, job_id: uuid.UUID, seq: int) -> bool:
        """Whether the fleet stream has not had this seq or a later one of the job: updates of
        one job committed by two replicas may arrive out of order (or, after a reconnect, twice)."""
        last = self._fleet_seqs.get(job_id)
        if last is not None and seq <= last:
            return False
        self._fleet_seqs[job_id] = seq
        self._fleet_seqs.move_to_end(job_id)
        if len(self._fleet_seqs) > FLEET_SEQS_KEPT:
            self._fleet_seqs.popitem(last=False)
        return True

    def encode(self, update: Snapshot) -> str:
        """The update as a JSON text frame; serialised once however many clients get it."""
        key = (update["job_id"], update["seq"])
        text = self._texts.get(key)
        if text is None:
            text = json.dumps(update)
            self._texts[key] = text
            if len(self._texts) > EVENT_TIMES_KEPT:
                self._texts.popitem(last=False)
        return text

    def push_lag(self, job_id: uuid.UUID, seq: int) -> float | None:
        """Seconds from the event behind update `seq` occurring until now, if known."""
        occurred = self._event_times.get((job_id, seq))
        return None if occurred is None else max(0.0, time.time() - occurred)

    def subscribers(self, job_id: uuid.UUID) -> int:
        return len(self._subs.get(job_id, ()))


class BatchSubscription(_Subscriber[StreamMessage]):
    """One batch WebSocket's queue of the batch stream's messages."""

    def __init__(self, hub: BatchHub, batch_id: uuid.UUID, maxsize: int) -> None:
        super().__init__(maxsize)
        self.hub = hub
        self.batch_id = batch_id

    def __enter__(self) -> BatchSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.hub.unsubscribe(self)


class BatchHub:
    """The batch streams' fan-out, per batch, with the same rules as Hub: publishing never
    waits, and a subscriber whose queue is full is dropped (it reconnects with ?after=)."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subs: dict[uuid.UUID, set[BatchSubscription]] = defaultdict(set)
        self.share: ShareBatchMessage | None = None  # set by the replica feed

    def subscribe(self, batch_id: uuid.UUID) -> BatchSubscription:
        sub = BatchSubscription(self, batch_id, self.queue_size)
        self._subs[batch_id].add(sub)
        return sub

    def unsubscribe(self, sub: BatchSubscription) -> None:
        subs = self._subs.get(sub.batch_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._subs[sub.batch_id]

    def publish(self, message: StreamMessage) -> None:
        """A message this replica committed: to its clients, and shared with the others."""
        self.receive(message)
        if self.share is not None:
            self.share(message)

    def receive(self, message: StreamMessage) -> None:
        """A message for this replica's clients only (another replica committed it)."""
        if not self._subs:
            return
        subs = self._subs.get(uuid.UUID(message["batch_id"]))
        if not subs:
            return
        for sub in list(subs):
            if not sub.offer(message):
                self.unsubscribe(sub)
