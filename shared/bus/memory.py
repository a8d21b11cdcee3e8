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
from shared.settings import Settings, service_user

from .amqp import Bus
from .core import GroupSubscription
from .message import (
    H_ATTEMPT,
    H_ERROR,
    H_EVENT,
    H_REASON,
    InboundMessage,
    MessageContext,
    Next,
    Outbound,
    Route,
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
    def __init__(
        self, settings: Settings | None = None, service: str = "memory", user: str | None = None
    ) -> None:
        """`user`: the AMQP user its messages are published as (their user_id); by default
        ingest's, which may carry any tenant, as RabbitMQ would have validated it."""
        super().__init__(settings or Settings.model_construct(), service)
        self.user = user if user is not None else service_user("ingest")
        self.published: list[Published] = []
        self.raw_published: list[tuple[str, bytes]] = []
        self.retries: list[Retried] = []
        self.dead_letters: list[DeadLettered] = []
        self.pending_retries: deque[Retried] = deque()
        # (group, routing key) of events a handler published without declaring them.
        self.undeclared: list[tuple[str, str]] = []
        self.started = False
        self._pipelines: dict[str, Next] = {}
        # The event publish() is sending, for send() to record with its final headers: pushed
        # by publish() and popped by send() with no await between, so gathered publishes
        # cannot take each other's.
        self._publishing: list[tuple[Event, int | None, GroupSubscription | None]] = []

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

    # --- publishing: Publisher builds every message; send() delivers it here -------------
    async def publish(self, event: Event, **options: Any) -> None:
        """Record the event (and whether the handler publishing it declared it), then
        publish it as the AMQP bus would."""
        by = _handling.get()
        if by is not None and type(event) not in by.publishes:
            self.undeclared.append((by.group.name, event.routing_key))
        self._publishing.append((event, options.get("priority"), by))
        await super().publish(event, **options)

    async def send(self, out: Outbound) -> None:
        if out.route is Route.EXCHANGE:
            await self._send_to_exchange(out)
        elif out.route is Route.QUEUE:
            message = out.as_inbound(str(out.headers.get(H_EVENT) or ""), self.user)
            for sub in self.groups.values():
                if self.topology.queue_name(sub.group) == out.key:
                    await self._run(sub, message)
        elif out.route is Route.RETRY:
            assert out.group is not None and out.delay_ms is not None
            message = out.as_inbound(str(out.headers.get(H_EVENT) or ""), self.user)
            attempt, error = int(out.headers[H_ATTEMPT]), str(out.headers[H_ERROR])
            retried = Retried(out.group, attempt, error, out.delay_ms, message)
            self.retries.append(retried)
            self.pending_retries.append(retried)
        else:
            await self._dead_letter(out)

    async def _send_to_exchange(self, out: Outbound) -> None:
        if self._publishing:
            event, priority, by = self._publishing.pop()
            group = by.group.name if by else None
            self.published.append(Published(event, priority, out.headers, group))
        else:
            self.raw_published.append((out.key, out.body))
        await self.deliver(out.as_inbound(user_id=self.user))

    async def _dead_letter(self, out: Outbound) -> None:
        assert out.group is not None
        dead = out.as_inbound(str(out.headers.get(H_EVENT) or ""), self.user)
        reason, error = str(out.headers[H_REASON]), str(out.headers[H_ERROR])
        attempt = int(out.headers[H_ATTEMPT])
        self.dead_letters.append(DeadLettered(out.group, reason, error, attempt, dead))
        for sub in self.dead_letter_subscriptions:
            if sub.group.name == out.group:
                ctx = MessageContext(dead, self.topology.dlq_name(sub.group))
                await self.dead_letter_pipeline(sub)(ctx)

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

    def job_failures(self) -> list[JobFailed]:
        return self.events(JobFailed)


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
