"""The batch aggregate against the real database (windows of one and several jobs in one
window), and the batch routes over the real bus: GET /v1/batches/{id} and the batch
WebSocket (snapshot first, seq, ?after= replay, final message, close codes)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.progress.window import Incoming, apply_window
from shared.bus import Bus
from shared.events import DocumentUploaded, Event, JobCancelled, JobFailed
from shared.settings import Settings
from shared.snapshots import BatchJobMessage, BatchSnapshot
from tests.integration.test_progress_window import run_events, three_page_job
from tests.integration.test_progress_ws import progress_service  # noqa: F401

pytestmark = pytest.mark.integration


async def new_batch(pool: asyncpg.Pool, tenant: str = "dev", **kw: Any) -> uuid.UUID:
    batch_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO batches (batch_id, tenant, name, cancel_requested_at) VALUES ($1, $2, $3, $4)",
        batch_id,
        tenant,
        kw.get("name", "test batch"),
        kw.get("cancel_requested_at"),
    )
    return batch_id


def in_batch(events: list[Event], batch_id: uuid.UUID) -> list[Event]:
    """The job's events, its upload naming the batch."""
    first = events[0]
    assert isinstance(first, DocumentUploaded)
    return [first.model_copy(update={"batch_id": batch_id}), *events[1:]]


def batch_job(batch_id: uuid.UUID, fail: str | None = None, tenant: str = "dev") -> list[Event]:
    job_id = uuid.uuid4()
    events = in_batch(three_page_job(job_id, tenant=tenant, start=datetime.now(UTC)), batch_id)
    if fail == "failed":
        return [*events[:4], JobFailed(job_id=job_id, stage="extract", reason="Broken page.")]
    if fail == "cancelled":
        return [*events[:3], JobCancelled(job_id=job_id)]
    return events


def round_robin(jobs: list[list[Event]]) -> list[Event]:
    """The jobs' events interleaved, each job's in its order."""
    longest = max(len(j) for j in jobs)
    return [j[i] for i in range(longest) for j in jobs if i < len(j)]


async def stream_of(pool: asyncpg.Pool, batch_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT seq, snapshot FROM batch_updates WHERE batch_id = $1 ORDER BY seq", batch_id
    )
    assert [r["seq"] for r in rows] == [r["snapshot"]["seq"] for r in rows]
    return [r["snapshot"] for r in rows]


def check_stream(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """seq consecutive from the first, every message valid, percent never backwards, exactly
    one final aggregate and it comes last; returns the aggregates."""
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    aggregates = [m for m in messages if m["type"] == "batch"]
    for m in messages:
        model = BatchSnapshot if m["type"] == "batch" else BatchJobMessage
        model.model_validate(m)
    percents = [a["percent"] for a in aggregates]
    assert percents == sorted(percents), percents
    assert [a["final"] for a in aggregates].count(True) == 1
    assert messages[-1]["type"] == "batch" and messages[-1]["final"]
    return aggregates


async def test_the_aggregate_follows_every_job_of_the_batch(db_pool: asyncpg.Pool):
    batch_id = await new_batch(db_pool)
    jobs = [batch_job(batch_id), batch_job(batch_id), batch_job(batch_id, "failed")]
    alone = three_page_job(uuid.uuid4())  # a job without a batch, interleaved
    events = round_robin([*jobs, alone])
    await run_events(db_pool, events)

    batch = await db_pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)
    assert batch["status"] == "completed"  # some failed: completed, with the counts
    assert (batch["jobs_total"], batch["jobs_completed"], batch["jobs_failed"]) == (3, 2, 1)
    assert batch["jobs_queued"] == batch["jobs_running"] == batch["jobs_cancelled"] == 0
    assert batch["percent"] == 100 and batch["finished_at"] is not None
    assert (batch["pages_total"], batch["pages_done"]) == (9, 6 + 1)
    messages = await stream_of(db_pool, batch_id)
    assert messages[0]["seq"] == 1 and batch["seq"] == messages[-1]["seq"]
    check_stream(messages)
    # Every update of every job of the batch is on the batch stream, in the job's seq order.
    for job in jobs:
        job_id = str(job[0].job_id)
        recorded = await db_pool.fetch(
            "SELECT payload FROM job_updates WHERE job_id = $1 ORDER BY seq", job[0].job_id
        )
        on_stream = [
            m["job"] for m in messages if m["type"] == "job" and m["job"]["job_id"] == job_id
        ]
        assert on_stream == [r["payload"] for r in recorded]
    assert str(alone[0].job_id) not in json.dumps(messages)


async def test_several_jobs_of_a_batch_in_one_window(db_pool: asyncpg.Pool):
    """One window, two jobs of one batch: one aggregate message after both job messages."""
    batch_id = await new_batch(db_pool)
    a, b = batch_job(batch_id), batch_job(batch_id)
    await run_events(db_pool, [a[0], b[0]])
    before = await stream_of(db_pool, batch_id)
    async with db_pool.acquire() as conn, conn.transaction():
        result = await apply_window(conn, [Incoming(a[1]), Incoming(b[1])])
    assert not result.errors
    after = (await stream_of(db_pool, batch_id))[len(before) :]
    assert [m["type"] for m in after] == ["job", "job", "batch"]
    assert after[-1]["jobs_running"] == 2 and after[-1]["status"] == "processing"
    pushed = [m for j in result.jobs.values() for m in j.outcome.batch_messages]
    assert pushed == after  # what is pushed after commit is what was recorded


async def test_a_cancelled_batch_ends_cancelled(db_pool: asyncpg.Pool):
    batch_id = await new_batch(db_pool, cancel_requested_at=datetime.now(UTC))
    await run_events(db_pool, round_robin([batch_job(batch_id), batch_job(batch_id, "cancelled")]))
    batch = await db_pool.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)
    assert batch["status"] == "cancelled" and batch["percent"] == 100
    assert (batch["jobs_completed"], batch["jobs_cancelled"]) == (1, 1)
    check_stream(await stream_of(db_pool, batch_id))


async def test_an_upload_cannot_join_another_tenants_batch(db_pool: asyncpg.Pool):
    batch_id = await new_batch(db_pool, tenant="someone-else")
    events = batch_job(batch_id)
    await run_events(db_pool, events)
    joined = await db_pool.fetchval("SELECT batch_id FROM jobs WHERE job_id = $1", events[0].job_id)
    assert joined is None
    assert await stream_of(db_pool, batch_id) == []


# --- over the bus and the progress service's routes -----------------------------------------


async def _watch(url: str, first: asyncio.Event | None = None) -> list[dict[str, Any]]:
    """Every message until the server closes normally; `first` is set once one arrived."""
    messages = []
    async with asyncio.timeout(60), connect(url) as ws:
        async for raw in ws:
            messages.append(json.loads(raw))
            if first is not None:
                first.set()
        assert ws.close_code == 1000
    return messages


async def _close(url: str) -> tuple[int, str]:
    async with asyncio.timeout(10), connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_batch_websocket_and_status(
    progress_service: tuple[str, Settings],  # noqa: F811
    db_pool: asyncpg.Pool,
):
    host, settings = progress_service
    key, other_key = list(settings.tenants_by_key)[:2]
    tenant = settings.tenants_by_key[key]
    batch_id = await new_batch(db_pool, tenant=tenant)
    jobs = [batch_job(batch_id, tenant=tenant), batch_job(batch_id, "failed", tenant)]
    auth = {"Authorization": f"Bearer {key}"}
    ws_url = f"ws://{host}/v1/batches/{batch_id}/events?token={key}"
    bus = Bus(settings, "test")
    await bus.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http:
            first = await http.get(f"/v1/batches/{batch_id}", headers=auth)
            assert first.status_code == 200
            assert first.json()["seq"] == 0 and first.json()["status"] == "queued"
            connected = asyncio.Event()
            watcher = asyncio.create_task(_watch(ws_url, connected))
            await asyncio.wait_for(connected.wait(), 10)  # its snapshot is in: seq 0
            for event in round_robin(jobs):
                await bus.publish(event)
            messages = await watcher

            assert messages[0]["type"] == "batch" and messages[0]["seq"] == 0  # snapshot first
            final = check_stream(messages[1:])[-1]
            assert final["status"] == "completed"
            assert (final["jobs_total"], final["jobs_completed"], final["jobs_failed"]) == (2, 1, 1)
            assert {m["job"]["job_id"] for m in messages if m["type"] == "job"} == {
                str(job[0].job_id) for job in jobs
            }

            # ?after= replays exactly what came after; after the end, it closes at once.
            middle = messages[len(messages) // 2]["seq"]
            assert await _watch(f"{ws_url}&after={middle}") == [
                m for m in messages if m["seq"] > middle
            ]
            assert await _watch(f"{ws_url}&after={final['seq']}") == []
            # A new connection: the final aggregate at once.
            assert await _watch(ws_url) == [final]

            status = await http.get(f"/v1/batches/{batch_id}", headers=auth)
            assert status.status_code == 200 and status.json() == final
            other = {"Authorization": f"Bearer {other_key}"}
            assert (await http.get(f"/v1/batches/{batch_id}", headers=other)).status_code == 404
            assert (await http.get(f"/v1/batches/{uuid.uuid4()}", headers=auth)).status_code == 404
            assert (await http.get("/v1/batches/not-an-id", headers=auth)).status_code == 404
            assert (await http.get(f"/v1/batches/{batch_id}")).status_code == 401
    finally:
        await bus.stop()

    base = f"ws://{host}/v1/batches/{batch_id}/events"
    for bad in (str(2**63), "-1", "abc"):
        code, reason = await _close(f"{base}?token={key}&after={bad}")
        assert code == 4400 and "'after' must be" in reason
    assert (await _close(f"{base}?token={other_key}"))[0] == 4404
    assert (await _close(base))[0] == 4401
    assert (await _close(f"ws://{host}/v1/batches/{uuid.uuid4()}/events?token={key}"))[0] == 4404
