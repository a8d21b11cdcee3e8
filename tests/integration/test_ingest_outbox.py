"""The outbox relay: rows left unpublished (a crash between commit and publish) reach the bus,
and relays running side by side publish each row exactly once."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.ingest.outbox import enqueue, relay_once, run_relay
from shared.bus import Bus
from shared.events import JobCancelled
from shared.settings import Settings
from tests.integration.test_ingest_api import bus_tap, running_ingest

pytestmark = pytest.mark.integration

# Cancellations of jobs that do not exist: harmless to any consumer of the test bus.
ROUTING_KEY = "job.cancelled"


@pytest.fixture
async def bus(test_settings: Settings, rabbit_available: None) -> AsyncIterator[Bus]:
    bus = Bus(test_settings, "outbox-test")
    await bus.start()
    try:
        yield bus
    finally:
        await bus.stop()


async def insert_unpublished(pool: asyncpg.Pool, n: int) -> list[str]:
    """Outbox rows as a request leaves them when it dies right after its commit."""
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(n):
            event = JobCancelled(job_id=uuid.uuid4(), reason="outbox relay test")
            assert await enqueue(conn, event, headers={"x-correlation-id": "relay-test"})
            ids.append(event.message_id())
    return ids


async def unpublished(pool: asyncpg.Pool, message_ids: list[str]) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE message_id = ANY($1::text[]) AND published_at IS NULL",
        message_ids,
    )


async def wait_published(pool: asyncpg.Pool, message_ids: list[str], timeout: float = 5) -> int:
    """Rows still unpublished once `timeout` passes (the relay commits just after the confirm)."""
    async with asyncio.timeout(timeout):
        while left := await unpublished(pool, message_ids):
            await asyncio.sleep(0.05)
    return left


async def test_service_relay_publishes_rows_left_behind(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> None:
    async with bus_tap(test_settings, ROUTING_KEY) as tap, running_ingest(test_settings):
        [message_id] = await insert_unpublished(db_pool, 1)
        await tap.wait_for(lambda: bool(tap.with_id(message_id)), timeout=10)
        [message] = tap.with_id(message_id)
        assert message.headers["x-correlation-id"] == "relay-test"
        assert json.loads(message.body)["reason"] == "outbox relay test"
        assert await wait_published(db_pool, [message_id]) == 0


async def test_concurrent_relay_passes_publish_each_row_once(
    test_settings: Settings, db_pool: asyncpg.Pool, bus: Bus
) -> None:
    async with bus_tap(test_settings, ROUTING_KEY) as tap:
        ids = await insert_unpublished(db_pool, 30)
        counts = await asyncio.gather(*(relay_once(db_pool, bus, batch=100) for _ in range(2)))
        assert sum(counts) <= 30  # another relay (a running stack) may take some
        assert await unpublished(db_pool, ids) == 0  # both passes have committed
        await tap.wait_for(lambda: all(tap.with_id(i) for i in ids))
        await asyncio.sleep(1.0)  # let any duplicate arrive
        assert {i: len(tap.with_id(i)) for i in ids} == {i: 1 for i in ids}


async def test_two_relay_loops_publish_each_row_exactly_once(
    test_settings: Settings, db_pool: asyncpg.Pool, bus: Bus
) -> None:
    other_bus = Bus(test_settings, "outbox-test-2")
    await other_bus.start()
    relays = [
        asyncio.create_task(run_relay(db_pool, b, interval=0.05, batch=7)) for b in (bus, other_bus)
    ]
    try:
        async with bus_tap(test_settings, ROUTING_KEY) as tap:
            ids: list[str] = []
            for _ in range(5):  # rows keep arriving while both relays poll
                ids += await insert_unpublished(db_pool, 10)
                await asyncio.sleep(0.03)
            await tap.wait_for(lambda: all(tap.with_id(i) for i in ids), timeout=15)
            assert await wait_published(db_pool, ids) == 0
            await asyncio.sleep(1.0)  # let any duplicate arrive
            duplicates = {i: n for i in ids if (n := len(tap.with_id(i))) != 1}
            assert duplicates == {}
            assert len(ids) == 50
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        await other_bus.stop()


async def test_a_relay_publishes_only_its_own_buses_rows(
    test_settings: Settings, db_pool: asyncpg.Pool, bus: Bus
) -> None:
    """Stacks on different buses may share a database (the tests' do): a relay must not put
    another bus's rows on its own (one once completed another stack's job in CI)."""
    from shared.db import create_pool

    pools = {
        prefix: await create_pool(test_settings.database_url, max_size=2, bus_prefix=prefix)
        for prefix in ("bus_a", "bus_b")
    }
    try:
        ids = await insert_unpublished(pools["bus_a"], 2)
        claimed = await db_pool.fetch(
            "SELECT DISTINCT bus_prefix FROM outbox WHERE message_id = ANY($1::text[])", ids
        )
        assert [r["bus_prefix"] for r in claimed] == ["bus_a"]
        # bus_b's relay passes over them, even when they are the only rows waiting.
        for _ in range(3):
            await relay_once(pools["bus_b"], bus, batch=1000)
        assert await unpublished(db_pool, ids) == 2
        while await relay_once(pools["bus_a"], bus, batch=1000):
            pass
        assert await unpublished(db_pool, ids) == 0
    finally:
        for pool in pools.values():
            await pool.close()
