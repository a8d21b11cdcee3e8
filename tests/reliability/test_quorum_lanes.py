"""Quorum queues keep the fairness priorities gave (on the real broker, a topology of the
test's own): an urgent message overtakes a bulk backlog through its own lane, a retry returns
to the lane it came from, and a cancel published urgent still reaches every process."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest

from shared import topology
from shared.bus import Bus, Delivery
from shared.events import DocumentUploaded, JobCancelled
from shared.settings import Settings
from tests.conftest import delete_bus

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

BACKLOG = 40


@pytest.fixture
async def settings(test_settings: Settings, rabbit_available: None) -> AsyncIterator[Settings]:
    own = test_settings.model_copy(
        update={
            "bus_prefix": f"{test_settings.bus_prefix}_lanes{uuid.uuid4().hex[:6]}",
            "retry_delays_ms": [50, 100],
            "queue_type": "quorum",
        }
    )
    yield own
    await delete_bus(own)
    connection = await aio_pika.connect(own.amqp_url)
    with contextlib.suppress(Exception):
        channel = await connection.channel()
        await channel.exchange_delete(topology.Topology.from_settings(own).urgent_exchange_name)
    await connection.close()


@pytest.fixture
async def buses(settings: Settings) -> AsyncIterator[Callable[[str], Bus]]:
    made: list[Bus] = []

    def make(service: str) -> Bus:
        made.append(Bus(settings, service))
        return made[-1]

    yield make
    for bus in made:
        await bus.stop()


def uploaded() -> DocumentUploaded:
    return DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "a" * 64)


async def until(predicate: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def depth(bus: Bus, queue: str) -> int:
    channel = await bus.connection.channel()  # type: ignore[union-attr]
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)
    finally:
        await channel.close()


async def test_an_urgent_job_overtakes_a_bulk_backlog(buses: Callable[[str], Bus]) -> None:
    order: list[uuid.UUID] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        order.append(event.job_id)
        await asyncio.sleep(0.02)  # a worker busy with each document

    bus = buses("extractor")
    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    await bus.connect()
    await bus.declare()
    topo = bus.topology
    bulk = [uploaded() for _ in range(BACKLOG)]
    for event in bulk:
        await bus.publish(event, priority=0)
    urgent = uploaded()
    await bus.publish(urgent, priority=9)
    # Routed by priority: the backlog in the bulk lane, the urgent job alone in its lane.
    assert await depth(bus, topo.queue_name(topology.EXTRACTOR)) == BACKLOG
    assert await depth(bus, topo.queue_name(topology.EXTRACTOR, topology.URGENT)) == 1
    await bus.consumer.start()
    await until(lambda: len(order) == BACKLOG + 1)
    # One queue in publish order would handle it last; its lane hands it over at once (at
    # most the bulk message already taken runs before it).
    assert order.index(urgent.job_id) <= 1, order.index(urgent.job_id)
    assert set(order) == {e.job_id for e in bulk} | {urgent.job_id}


async def test_a_retry_returns_to_its_lane(buses: Callable[[str], Bus]) -> None:
    deliveries: dict[uuid.UUID, list[tuple[int, str]]] = {}

    async def flaky(event: DocumentUploaded, delivery: Delivery) -> None:
        seen = deliveries.setdefault(event.job_id, [])
        seen.append((delivery.attempt, str(getattr(delivery.raw, "routing_key", ""))))
        if len(seen) == 1:
            raise ConnectionError("source unreachable")

    bus = buses("extractor")
    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, flaky, prefetch=4)
    await bus.start()
    topo = bus.topology
    urgent, bulk = uploaded(), uploaded()
    await bus.publish(urgent, priority=9)
    await bus.publish(bulk, priority=0)
    await until(lambda: all(len(deliveries.get(e.job_id, [])) == 2 for e in (urgent, bulk)))
    urgent_lane = topo.queue_name(topology.EXTRACTOR, topology.URGENT)
    bulk_lane = topo.queue_name(topology.EXTRACTOR)
    # The retry comes back (attempt 1) through the lane's delay queue into the same lane.
    assert deliveries[urgent.job_id][1] == (1, urgent_lane), deliveries[urgent.job_id]
    assert deliveries[bulk.job_id][1] == (1, bulk_lane), deliveries[bulk.job_id]


async def test_an_urgent_cancel_reaches_every_process(buses: Callable[[str], Bus]) -> None:
    got: dict[str, list[JobCancelled]] = {"a": [], "b": []}

    def keep(name: str) -> Callable[[JobCancelled, Delivery], Awaitable[None]]:
        async def handle(event: JobCancelled, delivery: Delivery) -> None:
            got[name].append(event)

        return handle

    first, second = buses("extractor"), buses("ocr")
    first.subscribe_broadcast(JobCancelled, keep("a"))
    second.subscribe_broadcast(JobCancelled, keep("b"))
    await first.start()
    await second.start()
    cancel = JobCancelled(job_id=uuid.uuid4())
    await first.publish(cancel, priority=9)  # as ingest publishes it: urgent
    await until(lambda: len(got["a"]) == 1 and len(got["b"]) == 1)
    assert got["a"][0].job_id == got["b"][0].job_id == cancel.job_id
