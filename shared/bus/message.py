"""What travels through the consumer pipeline: the incoming message (transport-neutral), the
per-message context each middleware reads and writes, and what a handler may learn besides
its event (Delivery)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import Enum
from typing import Any

from shared.events import Event

# Headers docpipe sets on every message.
H_EVENT = "x-event-type"
H_ATTEMPT = "x-attempt"
H_CORRELATION = "x-correlation-id"
H_ERROR = "x-error"
H_REASON = "x-dead-letter-reason"
H_QUEUE = "x-original-queue"

# The correlation id of the message being handled; publishes made meanwhile carry it.
correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

# How a message ends: what the metrics count and what the consumer does with it. Every
# settlement but REQUEUED is an ack (a retry or a dead letter is published first).
ACKED = "acked"
RETRIED = "retried"
DEAD_LETTERED = "dead_lettered"
REQUEUED = "requeued"


class Route(Enum):
    """Where an outbound message goes: the topic exchange (by routing key), one queue
    (default exchange), a group's delay queue, or the dead-letter exchange."""

    EXCHANGE = "exchange"
    QUEUE = "queue"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to send, whichever transport sends it. `key` is the routing key (EXCHANGE),
    the queue name (QUEUE), the retry queue name (RETRY) or the group name (DEAD_LETTER);
    `group` and `delay_ms` say whose retry or dead letter it is."""

    route: Route
    key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str | None = None
    correlation_id: str | None = None
    content_type: str | None = "application/json"
    priority: int | None = None
    expiration_seconds: float | None = None
    group: str | None = None
    delay_ms: int | None = None

    def as_inbound(
        self, routing_key: str | None = None, user_id: str | None = None
    ) -> InboundMessage:
        """How a consumer of it would see it (the in-memory bus delivers it so), published
        by `user_id`."""
        return InboundMessage(
            self.body,
            self.headers,
            self.key if routing_key is None else routing_key,
            message_id=self.message_id,
            correlation_id=self.correlation_id,
            content_type=self.content_type,
            priority=self.priority or 0,
            user_id=user_id,
        )


class InboundMessage:
    """One received message, whichever transport brought it (`raw` is the transport's own)."""

    __slots__ = (
        "attempt",
        "body",
        "content_type",
        "correlation_id",
        "event_type",
        "headers",
        "message_id",
        "priority",
        "raw",
        "redelivered",
        "routing_key",
        "user_id",
    )

    def __init__(
        self,
        body: bytes,
        headers: Mapping[str, Any],
        routing_key: str,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        content_type: str | None = "application/json",
        priority: int = 0,
        redelivered: bool = False,
        raw: Any = None,
        user_id: str | None = None,
    ) -> None:
        self.body = body
        self.headers = headers
        self.routing_key = routing_key
        self.message_id = message_id
        self.correlation_id = correlation_id
        self.content_type = content_type
        self.priority = priority
        self.redelivered = redelivered
        self.raw = raw
        # The AMQP user that published it, as the broker validated it (None: not given).
        self.user_id = user_id
        # The event type the publisher named (header), else the routing key.
        self.event_type = str(headers.get(H_EVENT) or routing_key or "")
        # How many retries came before this delivery (0 on the first).
        self.attempt = int(headers.get(H_ATTEMPT, 0) or 0)


class Delivery:
    """What a handler may want to know about the message besides its event."""

    __slots__ = ("attempt", "priority", "raw", "redelivered")

    def __init__(self, message: InboundMessage, attempt: int) -> None:
        self.raw = message.raw
        self.attempt = attempt
        self.redelivered = message.redelivered
        self.priority = message.priority


# A typed handler: receives the event type it subscribed with.
Handler = Callable[[Any, Delivery], Awaitable[None]]
# A handler of raw messages (the dead-letter recorder): no event to parse.
RawHandler = Callable[[InboundMessage], Awaitable[None]]


class MessageContext:
    """The state of one message on its way through the pipeline.

    `queue` names the consumer (the group) in metrics and logs; `event` and `handler` are set
    by the parse step; `settled` says how the message ended (ACKED, RETRIED, ...) and
    `outcome` what happened to its work (ok, dropped, job_failed, error) for the log line.
    """

    __slots__ = ("attempt", "event", "handler", "message", "outcome", "queue", "settled")

    def __init__(self, message: InboundMessage, queue: str) -> None:
        self.message = message
        self.queue = queue
        self.attempt = message.attempt
        self.event: Event | None = None
        self.handler: Handler | None = None
        self.settled = ACKED
        self.outcome = "ok"

    def delivery(self) -> Delivery:
        return Delivery(self.message, self.attempt)


Next = Callable[[MessageContext], Awaitable[None]]
