"""Windows of many events of many jobs (services/progress/window.py and the batcher that
forms them) against the real database: events grouped into windows in different ways end in
the same final state and byte-identical results as windows of one; each job's updates keep
seq strictly increasing and percent monotonic, and the final update is pushed. An event that
cannot apply (its job is missing, or it must be dropped) fails alone, not its window."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from services.progress import window as window_module
from services.progress.batcher import BATCHABLE, WindowBatcher
from services.progress.models import Outcome
from services.progress.window import Incoming, JobNotFoundYet, apply_event, apply_window
from shared.errors import JobGone
from shared.events import (
    DocumentUploaded,
    Event,
    ExtractionStarted,
    JobCompleted,
    JobFailed,
    PageExtracted,
    PagesExtracted,
)
from tests.integration.test_progress_window import (
    T0,
    check_updates,
    job_state,
    run_events,
    three_page_job,
)

pytestmark = pytest.mark.integration

JOB_COLUMNS = (
    "status",
    "stage",
    "percent",
    "format",
    "pages_total",
    "started_at",
    "finished_at",
    "error",
    "partial",
    "stalled",
)


class FakeDelivery:
    """What the batcher reads from a bus Delivery: a first, not redelivered message."""

    attempt = 0
    redelivered = False
    priority = 0


def jobs_events(n: int) -> tuple[list[uuid.UUID], list[Event]]:
    ids = [uuid.uuid4() for _ in range(n)]
    return ids, [e for j in ids for e in three_page_job(j)]


def final_of(state: dict[str, Any]) -> dict[str, Any]:
    job = state["job"]
    return {
        "job": {c: job[c] for c in JOB_COLUMNS},
        "progress": state["progress"],
        "result": state["result"],
        "last": {k: v for k, v in state["updates"][-1].items() if k not in ("seq", "updated_at")},
    }


async def reset(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> None:
    await pool.execute("DELETE FROM jobs WHERE job_id = ANY($1::uuid[])", ids)


async def run_windows(pool: asyncpg.Pool, events: list[Event], rng: random.Random) -> list[Outcome]:
    """Apply events in windows of random size like the batcher does: events that cannot be
    batched go as windows of one, and those whose job is missing are retried later."""
    queue, outcomes, rounds = list(events), [], 0
    while queue:
        rounds += 1
        assert rounds < 10_000
        size = rng.choice([1, 2, 3, 5, 8, 13, 40])
        taken, queue = queue[:size], queue[size:]
        batchable = [e for e in taken if type(e) in BATCHABLE]
        windows = [[e] for e in taken if type(e) not in BATCHABLE]
        for window in [*windows, batchable] if batchable else windows:
            async with pool.acquire() as conn, conn.transaction():
                result = await apply_window(conn, [Incoming(e) for e in window])
            outcomes += [j.outcome for j in result.jobs.values()]
            for i, error in result.errors.items():
                assert isinstance(error, JobNotFoundYet)
                queue.append(window[i])
    return outcomes


async def test_one_window_writes_one_update_per_job(db_pool: asyncpg.Pool):
    ids = [uuid.uuid4() for _ in range(4)]
    for j in ids:
        await apply_event(
            db_pool, DocumentUploaded(job_id=j, tenant="dev", document_uri="blob://sha256/ab")
        )
    before = {
        j: await db_pool.fetchval("SELECT count(*) FROM job_updates WHERE job_id = $1", j)
        for j in ids
    }
    await run_events(
        db_pool, [ExtractionStarted(job_id=j, format="pdf", pages_total=10) for j in ids]
    )
    window: list[Event] = [
        PageExtracted(job_id=j, page=p, text="x", has_text_layer=True)
        for p in range(1, 6)
        for j in ids
    ]
    window += window[:7]  # duplicates inside the window change nothing
    async with db_pool.acquire() as conn, conn.transaction():
        result = await apply_window(conn, [Incoming(e) for e in window])
    assert not result.errors and set(result.jobs) == set(ids)
    for j in ids:
        (update,) = result.jobs[j].outcome.updates
        assert update["stages"]["extract"]["done"] == 5
        n = await db_pool.fetchval("SELECT count(*) FROM job_updates WHERE job_id = $1", j)
        assert n == before[j] + 2  # one for ExtractionStarted, one for the whole window
    # The same window again (a redelivery): no counter moves, no update is written.
    async with db_pool.acquire() as conn, conn.transaction():
        again = await apply_window(conn, [Incoming(e) for e in window])
    for j in ids:
        assert again.jobs[j].outcome.updates == []
        done = await db_pool.fetchval(
            "SELECT done FROM job_progress WHERE job_id = $1 AND stage = 'extract'", j
        )
        assert done == 5


async def test_a_missing_job_fails_only_its_own_events(db_pool: asyncpg.Pool):
    missing, present = uuid.uuid4(), uuid.uuid4()
    await run_events(db_pool, three_page_job(present)[:2])
    window = [
        Incoming(PageExtracted(job_id=missing, page=1, text="x")),
        Incoming(PageExtracted(job_id=present, page=1, text="x", has_text_layer=True)),
        Incoming(JobFailed(job_id=missing, stage="x", reason="Nope."), last_attempt=True),
    ]
    async with db_pool.acquire() as conn, conn.transaction():
        result = await apply_window(conn, window)
    assert isinstance(result.errors[0], JobNotFoundYet)
    assert isinstance(result.errors[2], JobGone), "nothing can ever apply it: dropped"
    assert set(result.errors) == {0, 2} and set(result.jobs) == {present}
    [update] = result.jobs[present].outcome.updates
    assert update["stages"]["extract"]["done"] == 1


async def test_an_upload_that_reuses_a_job_id_is_dropped_alone(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
):
    """ensure_job refuses an upload that names an existing job with another tenant or
    document (JobGone): that event is dropped, the rest of its window applies."""
    victim, fresh = uuid.uuid4(), uuid.uuid4()
    await run_events(db_pool, three_page_job(victim)[:2])
    real_ensure_job = window_module.ensure_job

    async def refusing(conn: asyncpg.Connection, event: DocumentUploaded) -> None:
        if event.job_id == victim:
            # As the real check may: a statement that fails, then the refusal.
            with contextlib.suppress(asyncpg.PostgresError):
                await conn.execute("SELECT 1/0")
            raise JobGone("the job id belongs to another document")
        await real_ensure_job(conn, event)

    monkeypatch.setattr(window_module, "ensure_job", refusing)
    hijack = DocumentUploaded(job_id=victim, tenant="other", document_uri="blob://sha256/cd")
    window = [
        Incoming(hijack),
        Incoming(three_page_job(fresh)[0]),
        Incoming(PageExtracted(job_id=victim, page=1, text="mine", has_text_layer=True)),
    ]
    async with db_pool.acquire() as conn, conn.transaction():
        result = await apply_window(conn, window)
    assert set(result.errors) == {0} and isinstance(result.errors[0], JobGone)
    assert set(result.jobs) == {victim, fresh}
    victim_row = await db_pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", victim)
    uploaded = three_page_job(victim)[0]
    assert isinstance(uploaded, DocumentUploaded)
    assert victim_row["tenant"] == "dev" and victim_row["document_uri"] == uploaded.document_uri
    assert await db_pool.fetchval("SELECT status FROM jobs WHERE job_id = $1", fresh) == "queued"
    with pytest.raises(JobGone):
        await apply_event(db_pool, hijack)


async def test_batcher_pushes_every_jobs_final_update_in_order(db_pool: asyncpg.Pool):
    ids, events = jobs_events(5)
    await reset(db_pool, ids)
    pushed: list[tuple[dict[str, Any], datetime | None]] = []
    published: list[Event] = []

    def push(outcome: Outcome, at: datetime | None) -> None:
        pushed.extend((u, at) for u in outcome.updates)

    async def follow_up(outcome: Outcome) -> None:
        await asyncio.sleep(0)
        published.extend(outcome.publish)

    batcher = WindowBatcher(db_pool, push, follow_up, window=0.003, max_batch=7, retries=3)
    rng = random.Random(7)
    twice = [e for e in events for _ in range(2)]
    queue = rng.sample(twice, len(twice))
    try:
        rounds = 0
        while queue:
            rounds += 1
            assert rounds < 200

            async def one(event: Event) -> Event | None:
                await asyncio.sleep(rng.random() * 0.01)
                try:
                    await batcher.submit(event, FakeDelivery())  # type: ignore[arg-type]
                except JobNotFoundYet:
                    return event  # the bus would retry it later
                return None

            results = await asyncio.gather(*(one(e) for e in queue))
            queue = [e for e in results if e is not None]
    finally:
        await batcher.close()
    assert batcher.batches > 0 and batcher.events > 0
    assert sorted(e.job_id for e in published if isinstance(e, JobCompleted)) == sorted(ids)
    for j in ids:
        state = await job_state(db_pool, j)
        check_updates(state)
        mine = [u for u, _ in pushed if u["job_id"] == str(j)]
        assert mine == state["updates"], "every stored update is pushed, in seq order"
        assert mine[-1]["final"] and mine[-1]["status"] == "completed"
        assert state["job"]["finished_at"] is not None and state["job"]["finished_at"] > T0
    # Results are byte-identical to applying the same events one by one.
    results = {
        j: await db_pool.fetchval("SELECT result::text FROM job_results WHERE job_id = $1", j)
        for j in ids
    }
    await reset(db_pool, ids)
    await run_events(db_pool, events)
    for j in ids:
        assert results[j] == await db_pool.fetchval(
            "SELECT result::text FROM job_results WHERE job_id = $1", j
        )


async def test_batches_of_pages_in_windows_give_the_same_state(db_pool: asyncpg.Pool):
    """pages.extracted in windows (the extractor's batches of a long document) end in the
    same rows, counters and result as the page.extracted events they stand for."""
    ids, events = jobs_events(2)
    await reset(db_pool, ids)
    await run_events(db_pool, events)
    reference = {j: final_of(await job_state(db_pool, j)) for j in ids}

    batched: list[Event] = []
    for j in ids:
        mine = [e for e in events if e.job_id == j]
        pages = [e for e in mine if isinstance(e, PageExtracted) and e.chunks]
        assert len(pages) == 2
        batched += [e for e in mine if e not in pages]
        batched.append(PagesExtracted(job_id=j, pages=pages, occurred_at=pages[-1].occurred_at))
    rng = random.Random(9)
    for sequence in (batched, rng.sample(batched, len(batched)), batched + batched[::-1]):
        await reset(db_pool, ids)
        await run_windows(db_pool, sequence, rng)
        for j in ids:
            state = await job_state(db_pool, j)
            check_updates(state)
            assert final_of(state) == reference[j]


async def test_a_slow_follow_up_holds_back_only_its_own_messages(db_pool: asyncpg.Pool):
    """A window whose follow-up (job.completed's publish) is slow does not delay the next
    window's updates; its own messages are settled only once the follow-up is done."""
    (slow_job, fast_job), events = jobs_events(2)
    await reset(db_pool, [slow_job, fast_job])
    slow_events = [e for e in events if e.job_id == slow_job]
    fast_events = [e for e in events if e.job_id == fast_job]
    await run_events(db_pool, slow_events[:-1] + fast_events[:-1])  # all but the last events
    pushed: list[tuple[float, str, bool]] = []
    release = asyncio.Event()

    def push(outcome: Outcome, at: datetime | None) -> None:
        pushed.extend((time.monotonic(), u["job_id"], u["final"]) for u in outcome.updates)

    async def follow_up(outcome: Outcome) -> None:
        if any(e.job_id == slow_job for e in outcome.publish):
            await release.wait()

    batcher = WindowBatcher(db_pool, push, follow_up, window=0.002, max_batch=100, retries=3)
    try:
        slow = asyncio.create_task(batcher.submit(slow_events[-1], FakeDelivery()))  # type: ignore[arg-type]
        async with asyncio.timeout(10):
            while not any(j == str(slow_job) and final for _, j, final in pushed):
                await asyncio.sleep(0.005)
        # The slow job's final update is out; its message is not settled yet...
        assert not slow.done()
        # ...and another job's window goes through meanwhile, message settled and all.
        async with asyncio.timeout(5):
            await batcher.submit(fast_events[-1], FakeDelivery())  # type: ignore[arg-type]
        assert any(j == str(fast_job) and final for _, j, final in pushed)
        assert not slow.done()
        release.set()
        async with asyncio.timeout(5):
            await slow
    finally:
        release.set()
        await batcher.close()
