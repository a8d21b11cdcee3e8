"""A bus in memory, for handler tests without RabbitMQ (dramatiq's StubBroker and FastStream's
TestRabbitBroker are the models).

Same `subscribe`/`publish` as the AMQP bus, and the same pipelines: `publish` runs every
matching subscription's pipeline (parse, log context, metrics, failure policy, handler) before
it returns, so a test awaits a publish and then looks at what happened:

    bus = MemoryBus()
    setup(ServiceContext("analyzer", settings, bus, pool, blobs))
    await bus.publish(PageExtracted(...))
    assert bus.events(ChunksAnalyzed) == [...]

It records every publish, retry and dead letter. A retry waits in `pending_retries` until the
test calls `deliver_retries()` (the delay queue's TTL, expired on demand); a dead letter goes
to the group's dead-letter subscriptions. What lives in RabbitMQ itself (TTLs, DLX routing,
acks, priorities) is not imitated here: that stays tested against RabbitMQ.
"""

from __future__ import annotations

import functools
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.events import Event, JobFailed
from shared.settings import Settings
from shared.topology import ConsumerGroup

from .amqp import Bus
from .core import GroupSubscription
from .message import (
    H_ATTEMPT,
    H_CORRELATION,
    H_ERROR,
    H_EVENT,
    H_QUEUE,
    H_REASON,
    InboundMessage,
    MessageContext,
    Next,
    correlation_id,
)

E = TypeVar("E", bound=Event)

# The group whose handler is running, so a publish can be checked against what it declared.
_handling: ContextVar[GroupSubscription | None] = ContextVar("memory_bus_handling", default=None)


@dataclass(frozen=True)
class Published:
    event: Event
    priority: int | None
    headers: dict[str, Any]
    by_group: str | None  # the group whose handler published it, None from outside


@dataclass(frozen=True)
class Retried:
    group: str
    attempt: int
    error: str
    delay_ms: int
    message: InboundMessage


@dataclass(frozen=True)
class DeadLettered:
    group: str
    reason: str
    error: str
    attempt: int
    message: InboundMessage


class MemoryBus(Bus):
    def __init__(self, settings: Settings | None = None, service: str = "memory") -> None:
        super().__init__(settings or Settings.model_construct(), service)
        self.published: list[Published] = []
        self.raw_published: list[tuple[str, bytes]] = []
        self.retries: list[Retried] = []
        self.dead_letters: list[DeadLettered] = []
        self.pending_retries: deque[Retried] = deque()
        # (group, routing key) of events a handler published without declaring them.
        self.undeclared: list[tuple[str, str]] = []
        self.started = False
        self._pipelines: dict[str, Next] = {}

    # --- lifecycle: nothing to connect to ----------------------------------
    async def connect(self) -> None:
        pass

    async def declare(self) -> None:
        pass

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    async def ping(self) -> bool:
        return True

    # --- publishing --------------------------------------------------------
    async def publish(
        self,
        event: Event,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        by = _handling.get()
        if by is not None and type(event) not in by.publishes:
            self.undeclared.append((by.group.name, event.routing_key))
        hdrs: dict[str, Any] = {H_EVENT: event.routing_key}
        cid = correlation_id.get()
        if cid:
            hdrs[H_CORRELATION] = cid
        hdrs.update(headers or {})
        self.published.append(Published(event, priority, hdrs, by.group.name if by else None))
        message = InboundMessage(
            event.model_dump_json().encode(),
            hdrs,
            event.route,
            message_id=message_id or event.message_id(),
            correlation_id=cid or str(event.job_id),
            priority=priority or 0,
        )
        await self.deliver(message)

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        priority: int | None = None,
    ) -> None:
        self.raw_published.append((routing_key, body))
        hdrs = {H_EVENT: routing_key, **(headers or {})}
        message = InboundMessage(
            body, hdrs, routing_key, message_id=message_id, priority=priority or 0
        )
        await self.deliver(message)

    async def publish_to_queue(
        self,
        body: bytes,
        queue: str,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        hdrs = dict(headers or {})
        message = InboundMessage(body, hdrs, str(hdrs.get(H_EVENT) or ""), message_id=message_id)
        for sub in self.groups.values():
            if self.topology.queue_name(sub.group) == queue:
                await self._run(sub, message)

    def events(self, event_type: type[E]) -> list[E]:
        """The events of this type published so far, in order."""
        return [p.event for p in self.published if isinstance(p.event, event_type)]

    # --- delivery ----------------------------------------------------------
    async def deliver(self, message: InboundMessage) -> list[MessageContext]:
        """Run the message through every subscription bound to its routing key, as the
        topic exchange would route it; returns how it settled in each."""
        settled = []
        for sub in self.groups.values():
            if any(topic_matches(key, message.routing_key) for key in sub.group.binding_keys):
                settled.append(await self._run(sub, message))
        for broadcast in self.broadcasts:
            if topic_matches(broadcast.event_type.routing_key, message.routing_key):
                ctx = MessageContext(message, "broadcast")
                await self.broadcast_pipeline(broadcast)(ctx)
                settled.append(ctx)
        return settled

    async def _run(self, sub: GroupSubscription, message: InboundMessage) -> MessageContext:
        ctx = MessageContext(message, sub.group.name)
        token = _handling.set(sub)
        try:
            await self._pipeline(sub.group.name)(ctx)
        finally:
            _handling.reset(token)
        return ctx

    def _pipeline(self, group: str) -> Next:
        pipeline = self._pipelines.get(group)
        if pipeline is None:
            pipeline = self._pipelines[group] = self.group_pipeline(self.groups[group], self)
        return pipeline

    async def deliver_retries(self) -> int:
        """Deliver every retry waiting now (as if each delay queue's TTL had run out) to the
        group that failed it; returns how many. Retries these cause wait for the next call."""
        waiting = list(self.pending_retries)
        self.pending_retries.clear()
        for retry in waiting:
            await self._run(self.groups[retry.group], retry.message)
        return len(waiting)

    # --- the failure policy's transport -----------------------------------
    async def retry(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        attempt: int,
        error: str,
        delay_ms: int,
    ) -> None:
        again = _copy(message, {H_ATTEMPT: attempt, H_ERROR: error[:1000]})
        retried = Retried(group.name, attempt, error, delay_ms, again)
        self.retries.append(retried)
        self.pending_retries.append(retried)

    async def dead_letter(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        reason: str,
        error: str,
        attempt: int,
    ) -> None:
        dead = _copy(
            message,
            {
                H_EVENT: message.event_type,
                H_ATTEMPT: attempt,
                H_REASON: reason,
                H_ERROR: error[:4000],
                H_QUEUE: self.topology.queue_name(group),
            },
        )
        self.dead_letters.append(DeadLettered(group.name, reason, error, attempt, dead))
        for sub in self.dead_letter_subscriptions:
            if sub.group.name == group.name:
                ctx = MessageContext(dead, self.topology.dlq_name(group))
                await self.dead_letter_pipeline(sub)(ctx)

    def job_failures(self) -> list[JobFailed]:
        return self.events(JobFailed)


def _copy(message: InboundMessage, headers: dict[str, Any]) -> InboundMessage:
    return InboundMessage(
        message.body,
        {**message.headers, **headers},
        message.routing_key,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        priority=message.priority,
    )


@functools.cache
def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is one word, `#` zero or more."""
    return _match(tuple(pattern.split(".")), tuple(routing_key.split(".")))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])
