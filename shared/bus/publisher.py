"""Publishing on RabbitMQ with aio-pika: persistent messages, publisher confirms, priorities
(on quorum queues: the urgent or the bulk lane, by priority) and docpipe's headers; the
topology's declaration; the retry and dead-letter publishes the failure policy makes."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aiormq.exceptions import DeliveryError

from shared.events import Event
from shared.topology import GROUPS, ConsumerGroup, Topology

from .identity import H_PUBLISHED_BY, PublisherPolicy, amqp_user_of
from .message import (
    H_ATTEMPT,
    H_CORRELATION,
    H_ERROR,
    H_EVENT,
    H_QUEUE,
    H_REASON,
    InboundMessage,
    Outbound,
    Route,
    correlation_id,
)

log = structlog.get_logger("shared.bus")

PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
# How soon a robust connection tries again after the broker went away.
RECONNECT_SECONDS = 1.0
# Pauses before publishing again a message the broker nacked (about 16 s in all). A quorum
# queue nacks what arrives while it has no leader, and elects one within seconds.
NACK_RETRY_SECONDS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class Publisher:
    """One robust connection and one confirming channel: every publish waits for the broker's
    confirm. Consumers use a connection of their own (a publisher blocked by the broker's
    flow control must not stop the consumers that would drain it)."""

    def __init__(self, amqp_url: str, topology: Topology, app_id: str) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.app_id = app_id
        # Every message carries the connection's user as user_id: the broker checks it.
        self.user = amqp_user_of(amqp_url)
        # Which publishers are trusted (the bus sets it): a retry or a dead letter keeps its
        # first publisher in x-published-by (shared/bus/identity.py).
        self.publisher_policy: PublisherPolicy | None = None
        self.connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._urgent: AbstractExchange | None = None  # quorum queues only
        self._dlx: AbstractExchange | None = None

    async def connect(self) -> None:
        if self.connection is not None:
            return
        self.connection = await aio_pika.connect_robust(
            self.amqp_url, reconnect_interval=RECONNECT_SECONDS
        )
        self._channel = await self.connection.channel(publisher_confirms=True)
        # Exchanges as objects, without declaring them (declare() does): a publisher that
        # only sends must not need configure rights.
        self._exchange = await self._channel.get_exchange(self.topology.exchange_name, ensure=False)
        self._dlx = await self._channel.get_exchange(self.topology.dlx_name, ensure=False)
        if self.topology.quorum:
            name = self.topology.urgent_exchange_name
            self._urgent = await self._channel.get_exchange(name, ensure=False)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()
        self.connection = self._channel = self._exchange = self._urgent = self._dlx = None

    @property
    def channel(self) -> AbstractChannel:
        if self._channel is None:
            raise RuntimeError("the bus is not connected")
        return self._channel

    def is_connected(self) -> bool:
        """Whether the broker connection is up right now. A robust connection is never
        "closed" while it reconnects, so its `connected` event is what tells."""
        connection = self.connection
        return connection is not None and not connection.is_closed and connection.connected.is_set()

    async def declare(self) -> None:
        """Declare the whole topology, so a publish never races a consumer's first start.
        Needs configure rights on all of it: a least-privilege service user has them only
        for its own queues, and its deployment declares the topology (declare_topology)."""
        assert self.connection is not None, "connect first"
        async with self.connection.channel() as channel:
            await declare_topology(channel, self.topology)

    # --- publishing: every kind of message is built here, then send() carries it ---------
    async def publish(
        self,
        event: Event,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish the event on the topic exchange, persistently, and wait for the confirm."""
        hdrs: dict[str, Any] = {H_EVENT: event.routing_key}
        cid = correlation_id.get()
        if cid:
            hdrs[H_CORRELATION] = cid
        hdrs.update(headers or {})
        body = event.model_dump_json().encode()
        await self.send(
            Outbound(
                Route.EXCHANGE,
                event.route,
                body,
                hdrs,
                message_id=message_id or event.message_id(),
                correlation_id=cid or str(event.job_id),
                priority=priority,
            )
        )

    async def publish_raw(
        self, body: bytes, routing_key: str, *, priority: int | None = None, **options: Any
    ) -> None:
        """Publish bytes as they are onto the topic exchange (outbox relay, DLQ replay);
        `options`: headers, message_id."""
        headers = {H_EVENT: routing_key, **(options.get("headers") or {})}
        out = Outbound(Route.EXCHANGE, routing_key, body, headers, priority=priority)
        await self.send(replace(out, message_id=options.get("message_id")))

    async def publish_to_queue(self, body: bytes, queue: str, **options: Any) -> None:
        """Publish bytes straight into one queue (default exchange): a dead letter replayed
        into the queue it died in, as a retry would; `options`: headers, message_id."""
        headers = dict(options.get("headers") or {})
        await self.send(Outbound(Route.QUEUE, queue, body, headers, options.get("message_id")))

    async def retry(
        self, message: InboundMessage, group: ConsumerGroup, attempt: int, error: str, delay_ms: int
    ) -> None:
        """Into the group's delay queue for `delay_ms` (through the default exchange, so only
        this group sees it again); the queue's TTL then sends it back to the work queue (on
        quorum queues: of the lane the message's priority chose)."""
        # Jitter spreads a burst of failures; the queue TTL still bounds the wait.
        expiration = max(1, int(delay_ms * random.uniform(0.8, 1.0))) / 1000
        headers = {**message.headers, H_ATTEMPT: attempt, H_ERROR: error[:1000]}
        lane = self.topology.lane_of(message.priority)
        queue = self.topology.retry_queue_name(group, delay_ms, lane)
        headers[H_PUBLISHED_BY] = self.first_publisher(message)
        out = _resend(message, Route.RETRY, queue, headers, group.name)
        await self.send(replace(out, expiration_seconds=expiration, delay_ms=delay_ms))

    async def dead_letter(
        self, message: InboundMessage, group: ConsumerGroup, reason: str, error: str, attempt: int
    ) -> None:
        """Onto the dead-letter exchange with why, how often and from which queue."""
        headers = {
            **message.headers,
            H_EVENT: message.event_type,
            H_ATTEMPT: attempt,
            H_REASON: reason,
            H_ERROR: error[:4000],
            H_QUEUE: self.topology.queue_name(group),
            H_PUBLISHED_BY: self.first_publisher(message),
        }
        out = _resend(message, Route.DEAD_LETTER, group.name, headers, group.name)
        await self.send(replace(out, priority=None))

    def first_publisher(self, message: InboundMessage) -> str:
        """Who first published a message this service publishes again ("" if unknown)."""
        if self.publisher_policy is None:
            return message.user_id or ""
        return self.publisher_policy.publisher_of(message) or ""

    async def send(self, out: Outbound) -> None:
        """Carry one message with aio-pika, persistently, and wait for the broker's confirm."""
        message = aio_pika.Message(
            out.body,
            delivery_mode=PERSISTENT,
            message_id=out.message_id,
            correlation_id=out.correlation_id,
            content_type=out.content_type,
            headers=out.headers,
            priority=out.priority,
            expiration=out.expiration_seconds,
            app_id=self.app_id,
            user_id=self.user,
        )
        if out.route is Route.EXCHANGE:
            urgent = self.topology.exchange_for(out.priority) != self.topology.exchange_name
            exchange = self._require(self._urgent if urgent else self._exchange)
        elif out.route is Route.DEAD_LETTER:
            exchange = self._require(self._dlx)
        else:
            exchange = self.channel.default_exchange
        await _publish_until_taken(exchange, message, out.key)

    @staticmethod
    def _require(exchange: AbstractExchange | None) -> AbstractExchange:
        if exchange is None:
            raise RuntimeError("the bus is not connected")
        return exchange


async def _publish_until_taken(
    exchange: AbstractExchange, message: aio_pika.Message, key: str
) -> None:
    """Publish, and publish again while the broker nacks (a queue between two leaders): a
    nack means the broker did not take the message. One routed to several queues may then
    reach some of them twice; consumers are idempotent (they are for redeliveries too)."""
    for pause in (*NACK_RETRY_SECONDS, None):
        try:
            await exchange.publish(message, key, mandatory=False)
            return
        except DeliveryError as exc:
            if pause is None:
                raise
            log.warning("publish nacked, publishing again", key=key, pause=pause, error=str(exc))
            await asyncio.sleep(pause)


def _resend(
    message: InboundMessage, route: Route, key: str, headers: dict[str, Any], group: str
) -> Outbound:
    """The received message again, with new headers (a retry or a dead letter)."""
    return Outbound(
        route,
        key,
        message.body,
        headers,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        content_type=message.content_type,
        priority=message.priority,
        group=group,
    )


async def declare_topology(channel: AbstractChannel, topo: Topology) -> None:
    """Declare the exchanges, every group's queues and their bindings (idempotent)."""
    for name in topo.event_exchanges:
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(topo.dlx_name, aio_pika.ExchangeType.DIRECT, durable=True)
    # Live progress between progress replicas: transient updates, no queue of its own here.
    await channel.declare_exchange(
        topo.live_exchange_name, aio_pika.ExchangeType.FANOUT, durable=True
    )
    for group in GROUPS:
        specs = [topo.dead_letter_queue(group)]
        for lane in topo.lanes(group):
            specs.append(topo.work_queue(group, lane))
            specs += [topo.retry_queue(group, delay, lane) for delay in topo.retry_delays_ms]
        for spec in specs:
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            for exchange in spec.exchanges:
                for key in spec.binding_keys:
                    await queue.bind(exchange, routing_key=key)


async def declare_topology_at(amqp_url: str, topo: Topology) -> None:
    """Declare the topology over a connection of its own (an admin user's: the deployment
    step that lets least-privilege services start)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        async with connection.channel() as channel:
            await declare_topology(channel, topo)
    finally:
        await connection.close()
