"""The webhook outbox against the real PostgreSQL (a database of its own, so no running
stack's sender competes): a delivery is written by the transaction that ends a job and only
then, the tenant's default URL applies, a batch's last job queues batch.completed once, and
the sender retries until the real receiver answers 200, recording every attempt, with two
senders never delivering one event twice."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from services.progress.lifecycle import sweep_stalls
from services.progress.store import webhooks as webhook_store
from services.progress.transitions import deadline_reason
from services.progress.webhooks.delivery import WebhookConfig, webhook_id
from services.progress.webhooks.sender import deliver_due
from services.progress.window import Incoming, apply_event, apply_window
from shared.db import create_pool, drop_database
from shared.events import DocumentUploaded, Event, JobCancelled, JobFailed
from shared.settings import Settings
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0zMi1ieXRlcy1sb25nISE="


@pytest.fixture(scope="module")
async def pool(test_settings: Settings, db_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    url = f"{test_settings.database_url}_webhooks"
    own = await create_pool(url, max_size=6)
    yield own
    await own.close()
    await drop_database(url)


def sender_config(**over: Any) -> WebhookConfig:
    settings = Settings(
        webhook_secrets=f"dev={SECRET},other={SECRET}",
        allow_private_urls=True,
        webhook_retry_delays_seconds=[0.0, 0.0, 0.0],
        webhook_timeout_seconds=5.0,
    )
    return WebhookConfig(**{**WebhookConfig.of(settings).__dict__, **over})


async def new_job(
    pool: asyncpg.Pool,
    callback_url: str | None,
    *,
    tenant: str = "dev",
    batch_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A queued job as ingest leaves it: its row (with the callback URL), then its upload."""
    job_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO jobs (job_id, tenant, filename, document_uri, callback_url, batch_id) "
        "VALUES ($1, $2, 'doc.pdf', 'blob://sha256/ab', $3, $4)",
        job_id,
        tenant,
        callback_url,
        batch_id,
    )
    await apply_event(
        pool, DocumentUploaded(job_id=job_id, tenant=tenant, document_uri="blob://sha256/ab")
    )
    return job_id


async def deliveries(pool: asyncpg.Pool, **where: Any) -> list[asyncpg.Record]:
    ((column, value),) = where.items()
    rows: list[asyncpg.Record] = await pool.fetch(
        f"SELECT * FROM webhook_deliveries WHERE {column} = $1 ORDER BY created_at", value
    )
    return rows


@pytest.fixture
async def quiet(pool: asyncpg.Pool) -> None:
    """No delivery of an earlier test is due: the sender sees only this test's."""
    await pool.execute("UPDATE webhook_deliveries SET status = 'failed' WHERE status = 'pending'")


async def until_done_or_waiting_for_a_lock(pool: asyncpg.Pool, task: asyncio.Task[Any]) -> None:
    async with asyncio.timeout(10):
        while not task.done():
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if waiting:
                return
            await asyncio.sleep(0.01)


def failed(job_id: uuid.UUID) -> Event:
    return JobFailed(job_id=job_id, stage="extract", reason="The PDF is encrypted.")


async def test_the_transaction_that_ends_a_job_queues_its_event(pool: asyncpg.Pool) -> None:
    job_id = await new_job(pool, "http://127.0.0.1:1/hooks")
    assert await deliveries(pool, job_id=job_id) == [], "a live job has nothing to send"
    # Rolled back with its transaction: nothing queued.
    with pytest.raises(RuntimeError):
        async with pool.acquire() as conn, conn.transaction():
            await apply_window(conn, [Incoming(failed(job_id))])
            raise RuntimeError("abort")
    assert await deliveries(pool, job_id=job_id) == []
    await apply_event(pool, failed(job_id))
    await apply_event(pool, failed(job_id), redelivered=True)  # a retried message
    (row,) = await deliveries(pool, job_id=job_id)
    assert (row["event_type"], row["url"], row["status"]) == (
        "job.failed",
        "http://127.0.0.1:1/hooks",
        "pending",
    )
    assert row["data"]["status"] == "failed"
    assert row["data"]["error"] == "The PDF is encrypted."


async def test_a_job_without_a_url_uses_its_tenants_default_else_sends_nothing(
    pool: asyncpg.Pool,
) -> None:
    await webhook_store.sync_endpoints(pool, {"other": "http://127.0.0.1:2/default"})
    try:
        mine = await new_job(pool, None, tenant="other")
        nobody = await new_job(pool, None, tenant="dev")
        await apply_event(pool, JobCancelled(job_id=mine))
        await apply_event(pool, JobCancelled(job_id=nobody))
        (row,) = await deliveries(pool, job_id=mine)
        assert (row["event_type"], row["url"]) == ("job.cancelled", "http://127.0.0.1:2/default")
        assert await deliveries(pool, job_id=nobody) == []
    finally:
        await webhook_store.sync_endpoints(pool, {})
    assert await pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_a_job_failed_by_the_deadline_sweep_queues_its_event(pool: asyncpg.Pool) -> None:
    job_id = await new_job(pool, "http://127.0.0.1:4/hooks")
    await pool.execute(
        "UPDATE jobs SET created_at = now() - interval '2 hours' WHERE job_id = $1", job_id
    )
    outcome = await sweep_stalls(pool, stall_seconds=10**6, deadline_seconds=3600)
    assert any(u["job_id"] == str(job_id) and u["final"] for u in outcome.updates)
    (row,) = await deliveries(pool, job_id=job_id)
    assert (row["event_type"], row["data"]["error"]) == ("job.failed", deadline_reason(3600))


async def test_a_batch_is_announced_once_when_its_last_job_ends(pool: asyncpg.Pool) -> None:
    batch_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO batches (batch_id, tenant, name, callback_url) "
        "VALUES ($1, 'dev', 'march invoices', 'http://127.0.0.1:3/batch')",
        batch_id,
    )
    jobs = [await new_job(pool, None, batch_id=batch_id) for _ in range(3)]
    await apply_event(pool, failed(jobs[0]))
    assert await deliveries(pool, batch_id=batch_id) == []
    # The last two end in concurrent transactions: the second must see the first's job ended.
    async with pool.acquire() as conn:
        first = conn.transaction()
        await first.start()
        await apply_window(conn, [Incoming(JobCancelled(job_id=jobs[1]))])
        second = asyncio.create_task(apply_event(pool, JobCancelled(job_id=jobs[2])))
        await until_done_or_waiting_for_a_lock(pool, second)
        await first.commit()
    await second
    (row,) = await deliveries(pool, batch_id=batch_id)
    assert (row["event_type"], row["url"], row["job_id"]) == (
        "batch.completed",
        "http://127.0.0.1:3/batch",
        None,
    )
    data = row["data"]
    assert (data["jobs_total"], data["jobs_failed"], data["jobs_cancelled"]) == (3, 1, 2)
    assert (data["status"], data["name"]) == ("failed", "march invoices")
    (listed,) = await webhook_store.deliveries_of_batch(pool, batch_id)
    assert (listed["event_type"], listed["history"]) == ("batch.completed", [])
    assert await webhook_store.batch_tenant(pool, batch_id) == "dev"


async def test_the_sender_retries_until_the_receiver_answers_200(
    pool: asyncpg.Pool, quiet: None
) -> None:
    with WebhookReceiver(SECRET, failures=2) as receiver:
        job_id = await new_job(pool, receiver.url)
        await apply_event(pool, failed(job_id))
        config = sender_config()
        for _ in range(3):
            assert await deliver_due(pool, config) >= 1
        assert await deliver_due(pool, config) == 0, "delivered: nothing is due any more"
    (row,) = await deliveries(pool, job_id=job_id)
    assert (row["status"], row["attempts"], row["failures"]) == ("delivered", 3, 2)
    assert row["delivered_at"] is not None
    assert [r.answered for r in receiver.received] == [500, 500, 200]
    assert all(r.verified for r in receiver.received)
    assert receiver.successes() == {webhook_id(row["delivery_id"]): 1}
    (listed,) = await webhook_store.deliveries_of_job(pool, job_id)
    assert [(a["attempt"], a["status_code"]) for a in listed["history"]] == [
        (1, 500),
        (2, 500),
        (3, 200),
    ]
    assert listed["history"][0]["error"] == "The receiver answered 500."
    assert all(a["latency_ms"] >= 0 for a in listed["history"])


async def test_a_delivery_is_given_up_after_its_schedule_and_redelivered_on_request(
    pool: asyncpg.Pool, quiet: None
) -> None:
    with WebhookReceiver(SECRET, failures=10) as receiver:
        job_id = await new_job(pool, receiver.url)
        await apply_event(pool, failed(job_id))
        config = sender_config(retry_delays=(0.0,))
        await deliver_due(pool, config)
        await deliver_due(pool, config)
        (row,) = await deliveries(pool, job_id=job_id)
        assert (row["status"], row["attempts"]) == ("failed", 2)
        assert await deliver_due(pool, config) == 0
        assert await webhook_store.redeliver(pool, row["delivery_id"]) is not None
        receiver.failures = 0
        await deliver_due(pool, config)
    (row,) = await deliveries(pool, job_id=job_id)
    assert (row["status"], row["attempts"]) == ("delivered", 3)
    assert len({r.webhook_id for r in receiver.received}) == 1, "one id across redelivery"


async def test_two_senders_never_send_one_event_twice(pool: asyncpg.Pool, quiet: None) -> None:
    with WebhookReceiver(SECRET, failures=0) as receiver:
        jobs = [await new_job(pool, receiver.url) for _ in range(12)]
        for job_id in jobs:
            await apply_event(pool, failed(job_id))
        config = sender_config(batch=4)
        started = datetime.now(UTC)
        while sum(receiver.successes().values()) < len(jobs):
            await asyncio.gather(deliver_due(pool, config), deliver_due(pool, config))
            assert (datetime.now(UTC) - started).total_seconds() < 30
    assert len(receiver.received) == len(jobs)
    assert set(receiver.successes().values()) == {1}
