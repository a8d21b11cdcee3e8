"""The bus: a FastStream RabbitBroker bound to the declared topology, event publishing with
publisher confirms, and the consumer wrapper that applies the failure taxonomy.

Handlers receive a validated event and either return (ack), raise PermanentError (the job
fails with that reason), raise JobGone (dropped), or raise anything else (retried through
the delay queues, then dead-lettered with the error text).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aio_pika
import structlog
from aio_pika import IncomingMessage
from faststream import AckPolicy
from faststream.rabbit import Channel, RabbitBroker, RabbitMessage, RabbitQueue
from pydantic import ValidationError

from shared.errors import JobGone, PermanentError
from shared.events import Event, JobFailed, parse_event
from shared.settings import Settings
from shared.topology import GROUPS, ConsumerGroup, Topology

log = structlog.get_logger(__name__)

# Headers docpipe sets on every message.
H_EVENT = "x-event-type"
H_ATTEMPT = "x-attempt"
H_CORRELATION = "x-correlation-id"
H_ERROR = "x-error"
H_REASON = "x-dead-letter-reason"
H_QUEUE = "x-original-queue"

correlation_id: ContextVar[str | None] = ContextVar("correlation_id", default=None)

Handler = Callable[[Event, "Delivery"], Awaitable[None]]


class Delivery:
    """What a handler may want to know about the message besides its event."""

    def __init__(self, raw: IncomingMessage, attempt: int) -> None:
        self.raw = raw
        self.attempt = attempt
        self.redelivered = bool(raw.redelivered)
        self.priority = raw.priority or 0


class Bus:
    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.service = service
        self.topology = Topology.from_settings(settings)
        self.broker = RabbitBroker(
            settings.amqp_url,
            default_channel=Channel(prefetch_count=settings.prefetch, publisher_confirms=True),
            app_id=f"docpipe-{service}",
            graceful_timeout=30.0,
            reconnect_interval=1.0,
            # FastStream's default logger writes coloured text straight to stdout, outside the
            # JSON log; this one propagates to the root's JSON handler. Its per-message
            # "Received"/"Processed" lines go out at DEBUG: _handle logs each message already.
            log_level=logging.DEBUG,
            logger=logging.getLogger("docpipe.faststream"),
        )
        # Hooks for metrics (issue: observability); each gets (group name, outcome).
        self.on_outcome: list[Callable[[str, str], None]] = []
        # Each gets (group name, seconds the handler ran), whatever its outcome.
        self.on_handled: list[Callable[[str, float], None]] = []
        # Groups this process consumes, so metrics can start every series at zero.
        self.subscribed: list[ConsumerGroup] = []
        # Consumers registered with direct=True: (queue, group, handler, prefetch),
        # consumed with aio-pika itself on a connection of their own (see subscribe).
        self._direct: list[tuple[RabbitQueue, ConsumerGroup, Handler, int, bool]] = []
        self._direct_conn: aio_pika.abc.AbstractRobustConnection | None = None
        # Set by the service: answers True while a dependency (its database) is unreachable.
        # A handler failing during such an outage is not the message's fault, so the retry
        # does not use up an attempt: an outage longer than the retry ladder fails no job.
        self.dependency_down: Callable[[], Awaitable[bool]] | None = None

    # --- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        await self.broker.connect()
        await self.declare()
        await self.broker.start()
        if self._direct:
            await self._start_direct()

    async def stop(self) -> None:
        if self._direct_conn is not None:
            with contextlib.suppress(Exception):
                await self._direct_conn.close()
            self._direct_conn = None
        await self.broker.stop()

    async def _start_direct(self) -> None:
        """Consume the direct=True groups with aio-pika: a robust connection (consumers come
        back after a reconnect), one channel per queue with its own prefetch."""
        self._direct_conn = await aio_pika.connect_robust(self.settings.amqp_url)
        for spec, group, handler, prefetch, coalesce in self._direct:
            channel = await self._direct_conn.channel()
            await channel.set_qos(prefetch_count=prefetch)
            # declare_queue (not get_queue) gives a RobustQueue, which re-declares itself and
            # restores its consumer when the connection comes back after a broker restart.
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            acks = AckCoalescer() if coalesce else None

            async def on_message(
                raw: aio_pika.abc.AbstractIncomingMessage,
                group: ConsumerGroup = group,
                handler: Handler = handler,
                acks: AckCoalescer | None = acks,
            ) -> None:
                if acks is not None:
                    acks.delivered(raw)
                await self._handle(group, handler, _DirectMessage(raw, acks))

            await queue.consume(on_message)

    async def declare(self) -> None:
        """Declare the whole topology, so a publish never races a consumer's first start.

        Declared on a short-lived connection of its own: FastStream caches queues declared
        through the broker, and a subscriber would then reuse that queue's channel and
        ignore its own prefetch.
        """
        topo = self.topology
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            exchange = await channel.declare_exchange(
                topo.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            dlx = await channel.declare_exchange(
                topo.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True
            )
            for group in GROUPS:
                for key in group.binding_keys:
                    spec = topo.work_queue(group, key)
                    queue = await channel.declare_queue(
                        spec.name, durable=True, arguments=spec.arguments
                    )
                    await queue.bind(exchange, routing_key=key)
                dlq = await channel.declare_queue(topo.dlq_name(group), durable=True)
                await dlq.bind(dlx, routing_key=group.name)
                for delay in topo.retry_delays_ms:
                    spec = topo.retry_queue(group, delay)
                    await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        finally:
            await connection.close()

    # --- publishing --------------------------------------------------------
    async def publish(
        self,
        event: Event,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm."""
        hdrs: dict[str, Any] = {H_EVENT: event.routing_key}
        cid = correlation_id.get()
        if cid:
            hdrs[H_CORRELATION] = cid
        if headers:
            hdrs.update(headers)
        await self.broker.publish(
            event.model_dump_json().encode(),
            exchange=self.topology.exchange,
            routing_key=event.route,
            persist=True,
            message_id=message_id or event.message_id(),
            correlation_id=cid or str(event.job_id),
            content_type="application/json",
            headers=hdrs,
            priority=priority,
            mandatory=False,
        )

    async def publish_raw(
        self,
        body: bytes,
        routing_key: str,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
        priority: int | None = None,
    ) -> None:
        """Publish bytes as they are onto the topic exchange (outbox relay, DLQ replay)."""
        await self.broker.publish(
            body,
            exchange=self.topology.exchange,
            routing_key=routing_key,
            persist=True,
            message_id=message_id,
            content_type="application/json",
            headers={H_EVENT: routing_key, **(headers or {})},
            priority=priority,
            mandatory=False,
        )

    async def _retry(
        self,
        raw: IncomingMessage,
        group: ConsumerGroup,
        attempt: int,
        err: str,
        *,
        delay_ms: int | None = None,
    ) -> None:
        delays = self.topology.retry_delays_ms
        delay = delay_ms if delay_ms is not None else delays[min(attempt, len(delays)) - 1]
        # Jitter spreads a burst of failures; the queue TTL still bounds the wait.
        expiration = max(1, int(delay * random.uniform(0.8, 1.0))) / 1000
        await self.broker.publish(
            raw.body,
            queue=self.topology.retry_queue_name(group, delay),
            persist=True,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            content_type=raw.content_type,
            headers={**(raw.headers or {}), H_ATTEMPT: attempt, H_ERROR: err[:1000]},
            priority=raw.priority,
            expiration=expiration,
            mandatory=False,
        )

    async def _dead_letter(
        self, raw: IncomingMessage, group: ConsumerGroup, reason: str, err: str, attempt: int
    ) -> None:
        await self.broker.publish(
            raw.body,
            exchange=self.topology.dlx,
            routing_key=group.name,
            persist=True,
            message_id=raw.message_id,
            correlation_id=raw.correlation_id,
            content_type=raw.content_type,
            headers={
                **(raw.headers or {}),
                H_EVENT: (raw.headers or {}).get(H_EVENT) or raw.routing_key,
                H_ATTEMPT: attempt,
                H_REASON: reason,
                H_ERROR: err[:4000],
                H_QUEUE: self.topology.queue_name(group),
            },
            mandatory=False,
        )

    # --- consuming ---------------------------------------------------------
    def subscribe(
        self,
        group: ConsumerGroup,
        handler: Handler,
        *,
        prefetch: int,
        direct: bool = False,
        coalesce_acks: bool = False,
    ) -> None:
        """`direct`: consume with aio-pika itself instead of through FastStream, whose
        per-message machinery (dependency injection, body decoding, thread hops) costs more
        than a batching consumer's whole per-event work. Same _handle, same taxonomy.

        `coalesce_acks` (direct only): settled messages are acked together, one
        basic.ack(multiple) per batch (see AckCoalescer). For a consumer whose handlers finish
        in delivery order anyway, like the progress service's windows."""
        topo = self.topology
        self.subscribed.append(group)
        for key in group.binding_keys:
            queue = topo.work_queue(group, key)
            if direct:
                self._direct.append((queue, group, handler, prefetch, coalesce_acks))
                continue

            async def consume(msg: RabbitMessage) -> None:
                await self._handle(group, handler, msg)

            self.broker.subscriber(
                queue,
                topo.exchange,
                channel=Channel(prefetch_count=prefetch, publisher_confirms=True),
                ack_policy=AckPolicy.MANUAL,
                no_reply=True,
                title=f"{group.name}:{key}",
            )(consume)

    def subscribe_broadcast(self, routing_key: str, handler: Handler) -> None:
        """Every process gets its own copy (an exclusive, auto-deleted queue): used for
        job.cancelled, so whichever worker runs a job's subprocess can kill it at once."""
        queue = RabbitQueue(
            f"{self.topology.prefix}.broadcast.{self.service}.{uuid.uuid4().hex[:12]}",
            routing_key=routing_key,
            exclusive=True,
            auto_delete=True,
        )

        async def consume(msg: RabbitMessage) -> None:
            raw: IncomingMessage = msg.raw_message
            try:
                event = parse_event(routing_key, raw.body)
                await handler(event, Delivery(raw, 0))
            except Exception as exc:  # a broadcast is advisory: never retried or dead-lettered
                log.warning("broadcast handler failed", error=str(exc)[:300])
            await msg.ack()

        self.broker.subscriber(
            queue,
            self.topology.exchange,
            channel=Channel(prefetch_count=32),
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            title=f"{self.service}:broadcast:{routing_key}",
        )(consume)

    async def _dependency_down(self) -> bool:
        if self.dependency_down is None:
            return False
        try:
            return bool(await self.dependency_down())
        except Exception:  # a failing probe proves nothing: count the attempt
            return False

    def _count(self, group: ConsumerGroup, outcome: str) -> None:
        _call_hooks(self.on_outcome, group.name, outcome)

    async def _run_timed(
        self, group: ConsumerGroup, handler: Handler, event: Event, delivery: Delivery
    ) -> None:
        """Run the handler, reporting how long it ran (not counting the ack or any retry)."""
        started = time.perf_counter()
        try:
            await handler(event, delivery)
        finally:
            seconds = time.perf_counter() - started
            _call_hooks(self.on_handled, group.name, seconds)

    async def _handle(
        self, group: ConsumerGroup, handler: Handler, msg: RabbitMessage | _DirectMessage
    ) -> None:
        raw: IncomingMessage = msg.raw_message
        headers = raw.headers or {}
        event_type = str(headers.get(H_EVENT) or raw.routing_key or "")
        attempt = int(headers.get(H_ATTEMPT, 0) or 0)
        structlog.contextvars.clear_contextvars()
        self._count(group, "received")
        try:
            event = parse_event(event_type, raw.body)
        except (KeyError, ValidationError, ValueError, json.JSONDecodeError) as exc:
            # "event_type", not "event": structlog's "event" is the log message.
            structlog.contextvars.bind_contextvars(
                event_type=event_type, message_id=raw.message_id, queue=group.name
            )
            log.warning("malformed message dead-lettered", error=str(exc)[:500])
            await self._dead_letter(
                raw, group, "malformed", f"{type(exc).__name__}: {exc}", attempt
            )
            await msg.ack()
            self._count(group, "dead_lettered")
            return

        cid = str(headers.get(H_CORRELATION) or raw.correlation_id or event.job_id)
        token = correlation_id.set(cid)
        # One bind for all five (each bind call costs per message, thousands a second).
        structlog.contextvars.bind_contextvars(
            event_type=event_type,
            message_id=raw.message_id,
            queue=group.name,
            job_id=str(event.job_id),
            correlation_id=cid,
        )
        started = time.perf_counter()
        outcome = "ok"
        try:
            await self._run_timed(group, handler, event, Delivery(raw, attempt))
        except JobGone as exc:
            outcome = "dropped"
            log.info("dropped work for an ended job", why=str(exc))
            await msg.ack()
            self._count(group, "acked")
        except PermanentError as exc:
            outcome = "job_failed"
            log.warning("job failed permanently", reason=exc.reason)
            await self.publish(JobFailed(job_id=event.job_id, stage=group.name, reason=exc.reason))
            await msg.ack()
            self._count(group, "acked")
        except Exception as exc:  # transient, or a bug: retry, then dead-letter
            err = f"{type(exc).__name__}: {exc}"
            outcome = "error"
            if self.topology.retry_delays_ms and await self._dependency_down():
                log.warning(
                    "handler failed while a dependency is down; retrying without using an attempt",
                    error=err[:500],
                    attempt=attempt,
                )
                delay = self.topology.retry_delays_ms[0]
                await self._retry(raw, group, attempt, err, delay_ms=delay)
                await msg.ack()
                self._count(group, "retried")
            elif attempt < len(self.topology.retry_delays_ms):
                log.warning("handler failed, will retry", error=err[:500], attempt=attempt + 1)
                await self._retry(raw, group, attempt + 1, err)
                await msg.ack()
                self._count(group, "retried")
            else:
                log.error("retries exhausted, dead-lettering", error=err[:500], exc_info=True)
                await self._dead_letter(raw, group, "retries-exhausted", err, attempt)
                # Every job ends: the dead letter can be replayed, but the job fails now.
                with contextlib.suppress(Exception):
                    await self.publish(
                        JobFailed(
                            job_id=event.job_id,
                            stage=group.name,
                            reason=(
                                f"The {group.name} stage kept failing after "
                                f"{attempt} retries ({type(exc).__name__}); "
                                "the message was moved to the dead-letter queue."
                            ),
                        )
                    )
                await msg.ack()
                self._count(group, "dead_lettered")
        else:
            await msg.ack()
            self._count(group, "acked")
        finally:
            # One line per message, carrying job_id: `grep <job_id>` finds every stage.
            log.info(
                "message handled",
                outcome=outcome,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
            )
            correlation_id.reset(token)


def _call_hooks(hooks: list[Callable[[str, Any], None]], name: str, value: Any) -> None:
    """Call every metrics hook; a failing hook never fails the message. try/except rather
    than contextlib.suppress: this runs several times per message."""
    for hook in hooks:
        try:  # noqa: SIM105 - cheaper than contextlib.suppress on the hot path
            hook(name, value)
        except Exception:  # noqa: S110
            pass


class _DirectMessage:
    """What _handle uses of a FastStream message, over an aio-pika one."""

    __slots__ = ("raw_message", "acks")

    def __init__(
        self, raw: aio_pika.abc.AbstractIncomingMessage, acks: AckCoalescer | None = None
    ) -> None:
        self.raw_message = raw
        self.acks = acks

    async def ack(self) -> None:
        if self.acks is not None:
            self.acks.settle(self.raw_message)
        else:
            await self.raw_message.ack()


class AckCoalescer:
    """Acks one consumer channel's deliveries with one basic.ack(multiple=True) per batch.

    Every outcome of _handle ends in an ack (a retry or a dead letter is published first), so
    "settled" means "may be acked". A message is acked only once every message delivered
    before it on the channel is settled too: the ack covers the longest settled prefix, so a
    message still being handled is never acked by a later one's ack. The ack goes out on the
    next turn of the event loop, after every handler that a progress window released at once
    has settled: a window of 512 events costs one ack frame instead of 512 (the frame writes
    were ~17% of the progress service's CPU while it drained a backlog).

    Delivery tags belong to a channel: after a reconnect the coalescer starts over on the new
    channel, and settlements of the old channel's messages are dropped (the broker redelivers
    those; handlers are idempotent).
    """

    def __init__(self) -> None:
        self._channel: object | None = None
        self._order: deque[int] = deque()
        self._settled: dict[int, aio_pika.abc.AbstractIncomingMessage] = {}
        self._flush_scheduled = False

    def delivered(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        channel = _channel_of(raw)
        if channel is not self._channel:
            self._channel = channel
            self._order.clear()
            self._settled.clear()
        if raw.delivery_tag is not None:
            self._order.append(raw.delivery_tag)

    def settle(self, raw: aio_pika.abc.AbstractIncomingMessage) -> None:
        channel = _channel_of(raw)
        if channel is None or channel is not self._channel or raw.delivery_tag is None:
            return  # a message of a channel that is gone: it will be redelivered
        self._settled[raw.delivery_tag] = raw
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def pending(self) -> int:
        """Delivered messages not acked yet (settled or not)."""
        return len(self._order)

    def _flush(self) -> None:
        self._flush_scheduled = False
        last: aio_pika.abc.AbstractIncomingMessage | None = None
        while self._order and self._order[0] in self._settled:
            last = self._settled.pop(self._order.popleft())
        if last is not None:
            task = asyncio.ensure_future(last.ack(multiple=True))
            task.add_done_callback(_log_ack_failure)


def _channel_of(raw: aio_pika.abc.AbstractIncomingMessage) -> object | None:
    """The channel the message came on, or None once that channel is closed."""
    try:
        return raw.channel
    except aio_pika.exceptions.ChannelInvalidStateError:
        return None


def _log_ack_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The channel closed under us: the broker redelivers what was not acked.
        log.warning("coalesced ack failed", error=str(task.exception())[:300])


def new_job_id() -> uuid.UUID:
    return uuid.uuid4()
