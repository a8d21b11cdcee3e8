"""The bus on RabbitMQ: the subscriptions and pipelines of BusCore, carried by aio-pika (the
Publisher it is, and a Consumer on a robust connection of its own)."""

from __future__ import annotations

import contextlib

from shared.settings import Settings
from shared.topology import Topology

from .consumer import Consumer
from .core import BusCore
from .identity import PublisherPolicy
from .publisher import Publisher


class Bus(Publisher, BusCore):
    """Publishing and consuming for one service process.

    `start()` connects, declares the topology and starts a consumer per subscription;
    a process that only publishes calls `connect()` (and `declare()` if it may be first).
    Publishing, and the retries and dead letters the failure policy sends, are Publisher's.
    """

    def __init__(self, settings: Settings, service: str) -> None:
        BusCore.__init__(self, service, settings.retry_delays_ms)
        Publisher.__init__(self, settings.amqp_url, Topology.from_settings(settings), service)
        self.app_id = f"docpipe-{service}"
        self.settings = settings
        self.publisher_policy = PublisherPolicy.from_settings(settings)
        self.consumer = Consumer(settings.amqp_url, self.topology, self, self)

    async def start(self) -> None:
        await self.connect()
        if self.settings.declare_topology:
            await self.declare()
        await self.consumer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        await self.close()

    async def ping(self) -> bool:
        """Whether the publishing connection is up (the readiness probe's broker check)."""
        return self.is_connected()
