"""What every bus shares, whatever carries its messages: the subscriptions (typed, broadcast,
dead-letter), the hooks metrics attach to, and the pipelines built from them. The AMQP bus
(amqp.py) and the in-memory bus (memory.py) differ only in how messages travel."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from shared.events import Event, JobFailed
from shared.topology import ConsumerGroup

from .identity import PublisherPolicy
from .message import Delivery, Handler, InboundMessage, MessageContext, Next, RawHandler
from .middleware import (
    Advisory,
    CheckPublisher,
    CountOutcomes,
    DeadLetterMalformed,
    FailurePolicy,
    Hook,
    LogContext,
    OnRefused,
    Parse,
    RequeueAfterPause,
    TimeHandler,
    Transport,
    call_handler,
    chain,
    drop_malformed,
    raw_endpoint,
)

E = TypeVar("E", bound=Event)

# Pause before a dead letter that could not be recorded goes back to its queue.
DEFAULT_REQUEUE_PAUSE_SECONDS = 2.0


@dataclass
class GroupSubscription:
    """A consumer group's queue: one consumer, dispatching by event type to its handlers."""

    group: ConsumerGroup
    prefetch: int
    coalesce_acks: bool
    handlers: dict[str, tuple[type[Event], Handler]] = field(default_factory=dict)
    # What the handlers publish (declared at subscribe; the AsyncAPI document shows it).
    publishes: set[type[Event]] = field(default_factory=set)


@dataclass
class BroadcastSubscription:
    """Every process gets its own copy (an exclusive, auto-deleted queue)."""

    event_type: type[Event]
    handler: Handler


@dataclass
class DeadLetterSubscription:
    """A group's dead-letter queue, consumed raw: a dead letter is not an event to apply."""

    group: ConsumerGroup
    handler: RawHandler
    prefetch: int
    requeue_pause_seconds: float


class BusCore:
    """Subscriptions and pipelines; subclasses provide the Transport methods."""

    def __init__(self, service: str, retry_delays_ms: Iterable[int]) -> None:
        self.service = service
        self.retry_delays_ms = tuple(retry_delays_ms)
        self.groups: dict[str, GroupSubscription] = {}
        self.broadcasts: list[BroadcastSubscription] = []
        self.dead_letter_subscriptions: list[DeadLetterSubscription] = []
        # Metrics hooks: each outcome hook gets (group name, outcome), each handled hook
        # (group name, seconds the handler ran), whatever its outcome.
        self.on_outcome: list[Hook] = []
        self.on_handled: list[Hook] = []
        # Set by the service: answers True while a dependency (its database) is unreachable.
        # A handler failing during such an outage is not the message's fault, so the retry
        # does not use up an attempt: an outage longer than the retry ladder fails no job.
        self.dependency_down: Callable[[], Awaitable[bool]] | None = None
        # Who may name which tenant on an upload (the AMQP bus sets it from the settings), and
        # what a refusal does besides dropping the message (the extractor records it).
        self.publisher_policy: PublisherPolicy | None = None
        self.on_refused: OnRefused | None = None

    # --- subscribing -------------------------------------------------------
    @overload
    def subscribe(
        self,
        group: ConsumerGroup,
        event_types: type[E],
        handler: Callable[[E, Delivery], Awaitable[None]],
        *,
        prefetch: int,
        coalesce_acks: bool = False,
        publishes: Iterable[type[Event]] = (),
    ) -> None: ...

    @overload
    def subscribe(
        self,
        group: ConsumerGroup,
        event_types: tuple[type[Event], ...],
        handler: Callable[[Any, Delivery], Awaitable[None]],
        *,
        prefetch: int,
        coalesce_acks: bool = False,
        publishes: Iterable[type[Event]] = (),
    ) -> None: ...

    def subscribe(
        self,
        group: ConsumerGroup,
        event_types: type[Event] | tuple[type[Event], ...],
        handler: Callable[[Any, Delivery], Awaitable[None]],
        *,
        prefetch: int,
        coalesce_acks: bool = False,
        publishes: Iterable[type[Event]] = (),
    ) -> None:
        """Handle these event types arriving on the group's queue with `handler`, which
        receives the event as its type. Several calls for one group share its queue and its
        consumer (prefetch: the largest asked for).

        `coalesce_acks`: settled messages are acked together, one basic.ack(multiple) per
        batch (see AckCoalescer): for a consumer whose handlers finish in delivery order
        anyway, like the progress service's windows. `publishes`: the event types the handler
        publishes, for the AsyncAPI document (job.failed is added for every group)."""
        types = event_types if isinstance(event_types, tuple) else (event_types,)
        sub = self.groups.get(group.name)
        if sub is None:
            sub = self.groups[group.name] = GroupSubscription(group, prefetch, coalesce_acks)
        elif sub.coalesce_acks != coalesce_acks:
            raise ValueError(f"group {group.name}: coalesce_acks differs between subscriptions")
        sub.prefetch = max(sub.prefetch, prefetch)
        for model in types:
            if model.routing_key in sub.handlers:
                raise ValueError(f"group {group.name} already handles {model.routing_key}")
            sub.handlers[model.routing_key] = (model, handler)
        sub.publishes.update(publishes)
        sub.publishes.add(JobFailed)

    def subscribe_broadcast(
        self, event_type: type[E], handler: Callable[[E, Delivery], Awaitable[None]]
    ) -> None:
        """Every process gets its own copy: used for job.cancelled, so whichever worker runs a
        job's subprocess can kill it at once. Advisory: never retried or dead-lettered."""
        self.broadcasts.append(BroadcastSubscription(event_type, handler))

    def subscribe_dead_letters(
        self,
        group: ConsumerGroup,
        handler: RawHandler,
        *,
        prefetch: int,
        requeue_pause_seconds: float = DEFAULT_REQUEUE_PAUSE_SECONDS,
    ) -> None:
        """Consume the group's dead-letter queue. A handler that raises has the message put
        back on the queue after a pause (it is never retried through the delay queues or
        dead-lettered again: that would loop)."""
        self.dead_letter_subscriptions.append(
            DeadLetterSubscription(group, handler, prefetch, requeue_pause_seconds)
        )

    @property
    def subscribed(self) -> list[ConsumerGroup]:
        """The groups this process consumes, so metrics can start every series at zero."""
        return [sub.group for sub in self.groups.values()]

    # --- pipelines ---------------------------------------------------------
    def group_pipeline(self, sub: GroupSubscription, transport: Transport) -> Next:
        steps = (
            CountOutcomes(self.on_outcome),
            Parse(sub.handlers, DeadLetterMalformed(transport, sub.group)),
            LogContext(),
            FailurePolicy(transport, sub.group, self.retry_delays_ms, self._dependency_down),
            CheckPublisher(self.publisher_policy, lambda: self.on_refused),
            TimeHandler(self.on_handled),
        )
        return chain(steps, call_handler)

    def broadcast_pipeline(self, sub: BroadcastSubscription) -> Next:
        handlers = {sub.event_type.routing_key: (sub.event_type, sub.handler)}
        return chain((Parse(handlers, drop_malformed), Advisory()), call_handler)

    def dead_letter_pipeline(self, sub: DeadLetterSubscription) -> Next:
        return chain((RequeueAfterPause(sub.requeue_pause_seconds),), raw_endpoint(sub.handler))

    async def _dependency_down(self) -> bool:
        return self.dependency_down is not None and bool(await self.dependency_down())


async def run_pipeline(pipeline: Next, message: InboundMessage, queue: str) -> MessageContext:
    """Run one message through a pipeline; the context says how it settled."""
    ctx = MessageContext(message, queue)
    await pipeline(ctx)
    return ctx
