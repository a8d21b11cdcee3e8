"""Queue depth and consumer count of every topology queue, read from the broker.

A loop passively declares each queue (which reports its ready-message and consumer counts
without changing anything) every few seconds, on a connection of its own, and publishes the
numbers as gauges. `latest_queue_stats()` returns the last reading, for the admin API.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from prometheus_client import Gauge

from shared.topology import Topology

log = structlog.get_logger(__name__)

# How often the broker is asked; cheap (one round trip per queue), so a few seconds is fine.
POLL_SECONDS = 5.0
DECLARE_TIMEOUT_SECONDS = 5.0

QUEUE_MESSAGES = Gauge(
    "docpipe_queue_messages", "Messages ready in a broker queue (not counting unacked)", ["queue"]
)
QUEUE_CONSUMERS = Gauge(
    "docpipe_queue_consumers", "Consumers attached to a broker queue", ["queue"]
)


@dataclass(frozen=True)
class QueueStats:
    queue: str
    messages: int
    consumers: int


# The last complete reading, in topology order, and when it was taken (monotonic seconds).
_latest: list[QueueStats] = []
_latest_at: float | None = None


def latest_queue_stats() -> list[dict[str, Any]]:
    """The last reading: [{"queue", "messages", "consumers"}, ...]; empty before the first."""
    return [{"queue": s.queue, "messages": s.messages, "consumers": s.consumers} for s in _latest]


def latest_queue_stats_age() -> float | None:
    """Seconds since the last successful reading, or None if there was none yet."""
    return None if _latest_at is None else time.monotonic() - _latest_at


def _record(stats: list[QueueStats]) -> None:
    global _latest, _latest_at
    for s in stats:
        QUEUE_MESSAGES.labels(queue=s.queue).set(s.messages)
        QUEUE_CONSUMERS.labels(queue=s.queue).set(s.consumers)
    _latest = stats
    _latest_at = time.monotonic()


async def read_queue_stats(
    connection: AbstractConnection, names: list[str]
) -> tuple[list[QueueStats], list[str]]:
    """Passively declare each queue; returns the stats and the names that do not exist."""
    stats: list[QueueStats] = []
    missing: list[str] = []
    channel: AbstractChannel = await connection.channel()
    try:
        for name in names:
            try:
                queue = await channel.declare_queue(
                    name, passive=True, timeout=DECLARE_TIMEOUT_SECONDS
                )
            except aiormq.exceptions.ChannelNotFoundEntity:
                # A missing queue closes the channel (AMQP 404): note it, carry on on a new one.
                missing.append(name)
                channel = await connection.channel()
                continue
            result = queue.declaration_result
            stats.append(QueueStats(name, result.message_count or 0, result.consumer_count or 0))
    finally:
        with contextlib.suppress(Exception):
            await channel.close()
    return stats, missing


async def broker_stats_loop(
    amqp_url: str, topology: Topology, interval: float = POLL_SECONDS
) -> None:
    names = topology.all_queue_names()
    connection: AbstractConnection | None = None
    warned_missing: set[str] = set()
    try:
        while True:
            try:
                if connection is None or connection.is_closed:
                    connection = await aio_pika.connect(amqp_url, timeout=DECLARE_TIMEOUT_SECONDS)
                stats, missing = await read_queue_stats(connection, names)
                _record(stats)
                for name in set(missing) - warned_missing:
                    log.warning("topology queue missing on the broker", queue=name)
                warned_missing = set(missing)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker down or restarting: reconnect next round
                log.warning("reading queue stats failed", error=repr(exc)[:300])
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
                connection = None
            await asyncio.sleep(interval)
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()
