"""The bus on RabbitMQ: the subscriptions and pipelines of BusCore, carried by aio-pika (a
Publisher and a Consumer, each on a robust connection of its own)."""

from __future__ import annotations

import contextlib
from typing import Any

from aio_pika.abc import AbstractChannel

from shared.events import Event
from shared.settings import Settings
from shared.topology import ConsumerGroup, Topology

from .consumer import Consumer
from .core import BusCore
from .message import InboundMessage
from .publisher import Publisher


class Bus(BusCore):
    """Publishing and consuming for one service process.

    `start()` connects, declares the topology and starts a consumer per subscription;
    a process that only publishes calls `connect()` (and `declare()` if it may be first).
    """

    def __init__(self, settings: Settings, service: str) -> None:
        super().__init__(service, settings.retry_delays_ms)
        self.settings = settings
        self.topology = Topology.from_settings(settings)
        self.publisher = Publisher(settings.amqp_url, self.topology, f"docpipe-{service}")
        self.consumer = Consumer(settings.amqp_url, self.topology, self, self)

    # --- lifecycle ---------------------------------------------------------
    async def connect(self) -> None:
        await self.publisher.connect()

    async def declare(self) -> None:
        await self.publisher.declare()

    async def start(self) -> None:
        await self.connect()
        await self.declare()
        await self.consumer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        await self.publisher.close()

    async def ping(self) -> bool:
        """Whether the publishing connection is up (the readiness probe's broker check)."""
        return self.publisher.is_connected()

    @property
    def channel(self) -> AbstractChannel:
        """The publishing channel, for tools and tests that need aio-pika itself."""
        return self.publisher.channel

    # --- publishing (and the Transport the pipelines use) --------------------
    async def publish(
        self,
        event: Event,
        *,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish persistently and wait for the broker's confirm."""
        await self.publisher.publish(
            event, priority=priority, headers=headers, message_id=message_id
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
        await self.publisher.publish_raw(
            body, routing_key, headers=headers, message_id=message_id, priority=priority
        )

    async def publish_to_queue(
        self,
        body: bytes,
        queue: str,
        *,
        headers: dict[str, Any] | None = None,
        message_id: str | None = None,
    ) -> None:
        """Publish bytes straight into one queue (a dead letter replayed where it died)."""
        await self.publisher.publish_to_queue(body, queue, headers=headers, message_id=message_id)

    async def retry(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        attempt: int,
        error: str,
        delay_ms: int,
    ) -> None:
        await self.publisher.retry(message, group, attempt, error, delay_ms)

    async def dead_letter(
        self,
        message: InboundMessage,
        group: ConsumerGroup,
        reason: str,
        error: str,
        attempt: int,
    ) -> None:
        await self.publisher.dead_letter(message, group, reason, error, attempt)
