"""Consuming from RabbitMQ with aio-pika: one robust connection, one channel per queue with
its own prefetch, every message through its subscription's pipeline (see middleware.py), then
acked (or, coalesced, acked together with its neighbours)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)

from shared.topology import Topology

from .core import BusCore
from .message import REQUEUED, InboundMessage, MessageContext, Next
from .middleware import Transport
from .publisher import RECONNECT_SECONDS

log = structlog.get_logger("shared.bus")

# A broadcast (job.cancelled) is small and rare: room for a burst of them.
BROADCAST_PREFETCH = 32
# How long a stop waits for the messages being handled to finish.
GRACEFUL_STOP_SECONDS = 30.0
# Pause before a message whose pipeline could not settle it goes back to its queue.
UNSETTLED_REQUEUE_SECONDS = 1.0


def inbound(raw: AbstractIncomingMessage) -> InboundMessage:
    """The transport-neutral view of an aio-pika message."""
    return InboundMessage(
        raw.body,
        raw.headers or {},
        raw.routing_key or "",
        message_id=raw.message_id,
        correlation_id=raw.correlation_id,
        content_type=raw.content_type,
        priority=raw.priority or 0,
        redelivered=bool(raw.redelivered),
        raw=raw,
        user_id=raw.user_id,
    )


class InFlight:
    """Counts the messages being handled, so a stop can wait for them to finish."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True


class Consumer:
    """Starts a consumer for every subscription of the bus. Queues are declared (not merely
    looked up): a robust queue re-declares itself and restores its consumer when the
    connection comes back after a broker restart."""

    def __init__(self, amqp_url: str, topology: Topology, bus: BusCore, transport: Transport):
        self.amqp_url = amqp_url
        self.topology = topology
        self.bus = bus
        self.transport = transport
        self.connection: AbstractRobustConnection | None = None
        self.in_flight = InFlight()
        self._consuming: list[tuple[AbstractQueue, str]] = []

    async def start(self) -> None:
        bus, topo = self.bus, self.topology
        if not (bus.groups or bus.broadcasts or bus.dead_letter_subscriptions):
            return
        self.connection = await aio_pika.connect_robust(
            self.amqp_url, reconnect_interval=RECONNECT_SECONDS
        )
        for sub in bus.groups.values():
            pipeline = bus.group_pipeline(sub, self.transport)
            # One consumer per lane, each on its own channel and prefetch: an urgent message
            # never waits behind the bulk lane's backlog nor for a bulk prefetch slot.
            for lane in topo.lanes(sub.group):
                work = topo.work_queue(sub.group, lane)
                channel = await self._channel(sub.prefetch)
                queue = await channel.declare_queue(
                    work.name, durable=True, arguments=work.arguments
                )
                acks = AckCoalescer() if sub.coalesce_acks else None
                await self._consume(queue, pipeline, sub.group.name, acks)
        for broadcast in bus.broadcasts:
            channel = await self._channel(BROADCAST_PREFETCH)
            name = f"{topo.prefix}.broadcast.{bus.service}.{uuid.uuid4().hex[:12]}"
            # Transient and of this process alone: a classic exclusive queue on any type.
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
            for exchange in topo.event_exchanges:  # a cancel is urgent on quorum queues
                await queue.bind(exchange, routing_key=broadcast.event_type.routing_key)
            await self._consume(queue, bus.broadcast_pipeline(broadcast), "broadcast")
        for dead in bus.dead_letter_subscriptions:
            spec = topo.dead_letter_queue(dead.group)
            channel = await self._channel(dead.prefetch)
            # Passive: the topology declared it, and a service consuming another group's
            # dead letters (progress) has no right to configure that group's queues.
            queue = await channel.declare_queue(spec.name, passive=True)
            await self._consume(queue, bus.dead_letter_pipeline(dead), spec.name)

    async def _channel(self, prefetch: int) -> AbstractChannel:
        assert self.connection is not None
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def _consume(
        self, queue: AbstractQueue, pipeline: Next, name: str, acks: AckCoalescer | None = None
    ) -> None:
        callback = _on_message(pipeline, name, self.in_flight, acks)
        self._consuming.append((queue, await queue.consume(callback)))

    async def stop(self, graceful_seconds: float = GRACEFUL_STOP_SECONDS) -> None:
        """Stop taking messages, let those being handled finish (up to `graceful_seconds`),
        then close: what is still unacked then goes back to its queue."""
        if self.connection is None:
            return
        for queue, tag in self._consuming:
            with contextlib.suppress(Exception):  # a channel already gone takes nothing
                await queue.cancel(tag)
        self._consuming.clear()
        if not await self.in_flight.wait_idle(graceful_seconds):
            log.warning("stopping with messages still being handled", count=self.in_flight.count)
        await asyncio.sleep(0)  # coalesced acks go out on the next turn of the loop
        await self.connection.close()
        self.connection = None


def _on_message(
    pipeline: Next, queue: str, in_flight: InFlight, acks: AckCoalescer | None = None
) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
    """The aio-pika callback: the message through the pipeline, then settled."""

    async def on_message(raw: AbstractIncomingMessage) -> None:
        if acks is not None:
            acks.delivered(raw)
        in_flight.enter()
        try:
            ctx = MessageContext(inbound(raw), queue)
            try:
                await pipeline(ctx)
            except Exception as exc:
                await _requeue_unsettled(raw, queue, exc, acks)
                return
            if ctx.settled == REQUEUED:
                await raw.nack(requeue=True)
            elif acks is not None:
                acks.settle(raw)
            else:
                await raw.ack()
        finally:
            in_flight.exit()

    return on_message


async def _requeue_unsettled(
    raw: AbstractIncomingMessage, queue: str, exc: Exception, acks: AckCoalescer | None
) -> None:
    """The pipeline could not settle the message: its retry or dead letter was not confirmed
    (on quorum queues, a queue between two leaders nacks). Left unacked on a channel that
    stays open it would be stuck, and hold back every coalesced ack after it; so it goes back
    to its queue, after a pause (no hot loop), and is handled again."""
    log.warning("message not settled, requeued", queue=queue, error=repr(exc)[:300])
    await asyncio.sleep(UNSETTLED_REQUEUE_SECONDS)
    if acks is not None:
        acks.release(raw)
    with contextlib.suppress(Exception):  # a channel already gone redelivers it anyway
        await raw.nack(requeue=True)


class AckCoalescer:
    """Acks one consumer channel's deliveries with one basic.ack(multiple=True) per batch.

    Every outcome of a work queue's pipeline ends in an ack (a retry or a dead letter is
    published first), so "settled" means "may be acked". A message is acked only once every
    message delivered before it on the channel is settled too: the ack covers the longest
    settled prefix, so a message still being handled is never acked by a later one's ack.
    The ack goes out on the next turn of the event loop, after every handler that a progress
    window released at once has settled: a window of 512 events costs one ack frame, not 512.

    Delivery tags belong to a channel: after a reconnect the coalescer starts over on the new
    channel, and settlements of the old channel's messages are dropped (the broker redelivers
    those; handlers are idempotent).
    """

    def __init__(self) -> None:
        self._channel: object | None = None
        self._order: deque[int] = deque()
        # Settled messages by tag; None: given back to the broker (nacked), nothing to ack.
        self._settled: dict[int, AbstractIncomingMessage | None] = {}
        self._flush_scheduled = False

    def delivered(self, raw: AbstractIncomingMessage) -> None:
        channel = _channel_of(raw)
        if channel is not self._channel:
            self._channel = channel
            self._order.clear()
            self._settled.clear()
        if raw.delivery_tag is not None:
            self._order.append(raw.delivery_tag)

    def settle(self, raw: AbstractIncomingMessage) -> None:
        self._settle(raw, raw)

    def release(self, raw: AbstractIncomingMessage) -> None:
        """The message goes back to the broker (nacked): not acked, but it no longer holds
        back the acks of the messages delivered after it."""
        self._settle(raw, None)

    def _settle(self, raw: AbstractIncomingMessage, ack: AbstractIncomingMessage | None) -> None:
        channel = _channel_of(raw)
        if channel is None or channel is not self._channel or raw.delivery_tag is None:
            return  # a message of a channel that is gone: it will be redelivered
        self._settled[raw.delivery_tag] = ack
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def pending(self) -> int:
        """Delivered messages not acked yet (settled or not)."""
        return len(self._order)

    def _flush(self) -> None:
        self._flush_scheduled = False
        last: AbstractIncomingMessage | None = None
        while self._order and self._order[0] in self._settled:
            # ack(multiple) up to the last acked one also covers the earlier ones; a nacked
            # one among them is no longer the channel's to ack.
            last = self._settled.pop(self._order.popleft()) or last
        if last is not None:
            task = asyncio.ensure_future(last.ack(multiple=True))
            task.add_done_callback(_log_ack_failure)


def _channel_of(raw: AbstractIncomingMessage) -> object | None:
    """The channel the message came on, or None once that channel is closed."""
    try:
        return raw.channel
    except aio_pika.exceptions.ChannelInvalidStateError:
        return None


def _log_ack_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The channel closed under us: the broker redelivers what was not acked.
        log.warning("coalesced ack failed", error=str(task.exception())[:300])
