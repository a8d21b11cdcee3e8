"""The write path against the real database, one event at a time (windows of one): the same
events in order, shuffled and duplicated give the same completed job and byte-identical
result; failure, cancel, stalls and deadlines end jobs as they should."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.progress.lifecycle import sweep_stalls
from services.progress.models import Outcome
from services.progress.transitions import deadline_reason
from services.progress.window import JobNotFoundYet, apply_event
from shared.events import (
    Analysis,
    AnalyzedChunk,
    Chunk,
    ChunksAnalyzed,
    DocumentUploaded,
    Event,
    ExtractionAccepted,
    ExtractionStarted,
    ImageRef,
    ImagesExtracted,
    JobCancelled,
    JobCompleted,
    JobFailed,
    PageExtracted,
    PageOcred,
    PagesExtracted,
    PageSource,
)

pytestmark = pytest.mark.integration

# The jobs these events create share the session's database with the running stack, whose
# progress service fails every job created more than the deadline (an hour) ago: a fixed date
# in the past let that sweep fail a job in the middle of a test. Whole seconds, as before.
T0 = datetime.now(UTC).replace(microsecond=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _chunk(job_id: uuid.UUID, page: int, source: PageSource, index: int, text: str) -> Chunk:
    return Chunk(
        chunk_id=Chunk.make_id(job_id, page, source, index),
        page=page,
        index=index,
        source=source,
        start=0,
        end=len(text),
        text=text,
    )


def three_page_job(job_id: uuid.UUID, tenant: str = "dev", start: datetime = T0) -> list[Event]:
    """A realistic 3-page job: pages 1 and 3 have a text layer, page 2 is a scan needing OCR."""
    j = job_id

    def at(seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    c1a = _chunk(j, 1, PageSource.TEXT_LAYER, 0, "Invoice 42")
    c1b = _chunk(j, 1, PageSource.TEXT_LAYER, 1, "Total: $10")
    c2 = _chunk(j, 2, PageSource.OCR, 0, "Signed by hand")
    c3 = _chunk(j, 3, PageSource.TEXT_LAYER, 0, "Contact bob@example.com")

    def analyzed(t: float, *chunks: tuple[Chunk, float]) -> ChunksAnalyzed:
        items = [
            AnalyzedChunk(
                chunk=c,
                analysis=Analysis(
                    analyzer="builtin/1",
                    language="en",
                    word_count=len(c.text.split()),
                    keywords=c.text.lower().split()[:2],
                    entities=[],
                    cost_usd=cost,
                ),
            )
            for c, cost in chunks
        ]
        first = chunks[0][0]
        return ChunksAnalyzed(
            job_id=j, page=first.page, source=first.source, items=items, occurred_at=at(t)
        )

    image = ImageRef(
        image_id=uuid.uuid5(j, "img"), uri="blob://sha256/" + "00" * 32, width=100, height=100
    )
    return [
        DocumentUploaded(
            job_id=j, tenant=tenant, document_uri="blob://sha256/" + "ab" * 32, filename="doc.pdf",
            occurred_at=at(0),
        ),
        ExtractionStarted(job_id=j, format="pdf", pages_total=3, occurred_at=at(1)),
        PageExtracted(
            job_id=j, page=1, text="Invoice 42\nTotal: $10", has_text_layer=True,
            chunks=[c1a, c1b], occurred_at=at(2),
        ),
        ImagesExtracted(job_id=j, page=2, images=[image], occurred_at=at(3)),
        PageExtracted(job_id=j, page=2, ocr_pending=True, occurred_at=at(3)),
        PageExtracted(
            job_id=j, page=3, text="Contact bob@example.com", has_text_layer=True,
            chunks=[c3], occurred_at=at(4),
        ),
        analyzed(5.5, (c1a, 0.001), (c1b, 0.002)),
        PageOcred(
            job_id=j, page=2, text="Signed by hand", chunks=[c2], images_ocred=1,
            ocr_seconds=2.5, occurred_at=at(8),
        ),
        analyzed(6, (c3, 0.0)),
        analyzed(9, (c2, 0.004)),
    ]  # fmt: skip


async def run_events(pool: asyncpg.Pool, events: list[Event]) -> list[Outcome]:
    """Apply events like the bus would: an event whose job does not exist yet is retried
    after the others."""
    queue, outcomes, retries = list(events), [], 0
    while queue:
        event = queue.pop(0)
        try:
            outcomes.append(await apply_event(pool, event))
        except JobNotFoundYet:
            retries += 1
            assert retries < 10_000
            queue.append(event)
    return outcomes


async def job_state(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict:
    job = await pool.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    progress = await pool.fetch(
        "SELECT stage, total, done, failed FROM job_progress WHERE job_id = $1 ORDER BY stage",
        job_id,
    )
    updates = await pool.fetch(
        "SELECT seq, payload FROM job_updates WHERE job_id = $1 ORDER BY seq", job_id
    )
    result = await pool.fetchval("SELECT result::text FROM job_results WHERE job_id = $1", job_id)
    return {
        "job": job,
        "progress": [tuple(r) for r in progress],
        "updates": [r["payload"] for r in updates],
        "seqs": [r["seq"] for r in updates],
        "result": result,
    }


def check_updates(state: dict) -> None:
    seqs, updates = state["seqs"], state["updates"]
    assert seqs == list(range(1, len(seqs) + 1))
    assert [u["seq"] for u in updates] == seqs
    percents = [u["percent"] for u in updates]
    assert percents == sorted(percents), percents
    assert [p for p in percents if p == 100] == [100]
    assert updates[-1]["percent"] == 100 and updates[-1]["status"] == "completed"
    assert updates[-1]["final"] is True
    assert all(not u["final"] for u in updates[:-1])
    # A redelivered event must never be counted twice, not even transiently.
    for u in updates:
        ex, ocr, an = (u["stages"][s] for s in ("extract", "ocr", "analyze"))
        assert ex["done"] <= 3 and ocr["total"] <= 1 and ocr["done"] <= ocr["total"], u
        assert an["total"] <= 4 and an["done"] <= 4 and u["pages_done"] <= 3, u


async def test_same_events_in_any_order_give_the_same_result(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    events = three_page_job(job_id)
    rng = random.Random(1234)
    shuffled = rng.sample(events, len(events))
    twice = [e for e in events for _ in range(2)]  # each redelivered at once
    sequences = [events, shuffled, twice] + [rng.sample(twice, len(twice)) for _ in range(3)]

    runs = []
    for sequence in sequences:
        await db_pool.execute("DELETE FROM jobs WHERE job_id = $1", job_id)
        outcomes = await run_events(db_pool, sequence)
        state = await job_state(db_pool, job_id)
        completed = [e for o in outcomes for e in o.publish if isinstance(e, JobCompleted)]
        assert len(completed) == 1, "JobCompleted is published once"
        assert completed[0].pages_total == 3 and completed[0].chunks_total == 4
        pushed = [u for o in outcomes for u in o.updates]
        assert pushed == state["updates"]
        check_updates(state)
        runs.append(state)

    first = runs[0]
    job = first["job"]
    assert job["status"] == "completed" and job["stage"] == "completed"
    assert job["percent"] == 100 and job["finished_at"] == at(9)
    assert first["progress"] == [("analyze", 4, 4, 0), ("extract", 3, 3, 0), ("ocr", 1, 1, 0)]
    for other in runs[1:]:
        assert other["result"] == first["result"]
        assert other["progress"] == first["progress"]

    result = await db_pool.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
    assert result["text"] == "Invoice 42\nTotal: $10\n\nSigned by hand\n\nContact bob@example.com"
    assert [p["source"] for p in result["pages"]] == ["text-layer", "ocr", "text-layer"]
    assert [c["page"] for c in result["chunks"]] == [1, 1, 2, 3]
    assert result["cost"]["total_usd"] == 0.007
    assert result["timings"]["ocr_seconds"] == 2.5
    assert result["timings"]["processing_seconds"] == 8.0


async def test_no_change_after_completion(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    outcomes = await run_events(db_pool, three_page_job(job_id))
    [first_completed] = [e for o in outcomes for e in o.publish]
    before = await job_state(db_pool, job_id)
    late = await apply_event(db_pool, JobFailed(job_id=job_id, stage="ocr", reason="Too late."))
    assert late.updates == [] and late.publish == []
    # A retried message re-announces completion, identically.
    retried = await apply_event(db_pool, three_page_job(job_id)[-1], redelivered=True)
    assert retried.updates == []
    [announced] = retried.publish
    assert isinstance(announced, JobCompleted)
    assert announced.model_dump_json() == first_completed.model_dump_json()
    after = await job_state(db_pool, job_id)
    assert after["job"]["status"] == "completed" and after["seqs"] == before["seqs"]


async def test_zero_pages_completes_with_empty_result(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    events = three_page_job(job_id)[:1] + [
        ExtractionStarted(job_id=job_id, format="txt", pages_total=0, occurred_at=at(1))
    ]
    outcomes = await run_events(db_pool, events)
    state = await job_state(db_pool, job_id)
    assert state["job"]["status"] == "completed"
    assert any(isinstance(e, JobCompleted) for o in outcomes for e in o.publish)
    result = await db_pool.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
    assert result["pages"] == [] and result["text"] == "" and result["pages_total"] == 0


async def test_accepted_extraction_shows_the_extracting_stage_at_once(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    uploaded = three_page_job(job_id)[0]
    await run_events(db_pool, [uploaded])
    out = await apply_event(
        db_pool, ExtractionAccepted(job_id=job_id, format="pdf", occurred_at=at(0.1))
    )
    [update] = out.updates
    assert update["status"] == "processing" and update["stage"] == "extracting"
    assert update["pages_total"] is None and 0 <= update["percent"] < 100
    again = await apply_event(
        db_pool, ExtractionAccepted(job_id=job_id, format="pdf", occurred_at=at(0.1))
    )
    assert again.updates == [], "a redelivered acceptance changes nothing"
    # The rest of the job still completes as usual.
    await run_events(db_pool, three_page_job(job_id)[1:])
    assert (await job_state(db_pool, job_id))["job"]["status"] == "completed"


async def test_failure_is_final(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    events = three_page_job(job_id)
    await run_events(db_pool, events[:3])
    reason = "The PDF is encrypted and no password was given."
    out = await apply_event(db_pool, JobFailed(job_id=job_id, stage="extractor", reason=reason))
    assert out.updates[-1]["status"] == "failed" and out.updates[-1]["final"]
    assert out.updates[-1]["error"] == reason
    percent = out.updates[-1]["percent"]
    assert 0 < percent < 100
    await run_events(db_pool, events[3:])
    state = await job_state(db_pool, job_id)
    assert state["job"]["status"] == "failed" and state["job"]["error"] == reason
    assert state["updates"][-1]["seq"] == out.updates[-1]["seq"]
    assert state["result"] is None
    # The pages that arrived after the failure were not recorded.
    assert await db_pool.fetchval("SELECT count(*) FROM job_pages WHERE job_id = $1", job_id) == 1


async def test_job_cancelled_ends_the_job_with_a_partial_result(db_pool: asyncpg.Pool):
    """Only progress writes job status: ingest records the cancel request and publishes
    job.cancelled; applying it sets status and stage, keeps a partial result and pushes the
    final update, once however often it is delivered."""
    job_id = uuid.uuid4()
    events = three_page_job(job_id)
    await run_events(db_pool, events[:3])
    assert await db_pool.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id) == (
        "processing"
    )
    out = await apply_event(db_pool, JobCancelled(job_id=job_id, occurred_at=at(20)))
    [final] = out.updates
    assert final["status"] == "cancelled" and final["stage"] == "cancelled" and final["final"]
    assert out.publish == []
    again = await apply_event(
        db_pool, JobCancelled(job_id=job_id, occurred_at=at(20)), redelivered=True
    )
    assert again.updates == [] and again.publish == []
    state = await job_state(db_pool, job_id)
    assert state["job"]["status"] == "cancelled" and state["job"]["stage"] == "cancelled"
    assert state["job"]["partial"] is True and state["job"]["finished_at"] == at(20)
    assert state["updates"][-1] == final
    result = await db_pool.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
    assert result["partial"] is True and result["status"] == "cancelled"
    assert [p["number"] for p in result["pages"]] == [1]
    # Work that arrives after the cancel is not recorded.
    await run_events(db_pool, events[3:])
    assert (await job_state(db_pool, job_id))["seqs"] == state["seqs"]
    assert await db_pool.fetchval("SELECT count(*) FROM job_pages WHERE job_id = $1", job_id) == 1


async def test_a_status_written_elsewhere_still_gets_its_final_update(db_pool: asyncpg.Pool):
    """An ingest that still writes status = 'cancelled' itself (before this change, or
    during a rolling deploy): the job.cancelled that follows records and pushes the final
    update and the partial result, once."""
    job_id = uuid.uuid4()
    events = three_page_job(job_id)
    await run_events(db_pool, events[:3])
    await db_pool.execute("UPDATE jobs SET status = 'cancelled' WHERE job_id = $1", job_id)
    out = await apply_event(db_pool, JobCancelled(job_id=job_id, occurred_at=at(20)))
    assert [u["status"] for u in out.updates] == ["cancelled"] and out.updates[0]["final"]
    again = await apply_event(db_pool, JobCancelled(job_id=job_id, occurred_at=at(20)))
    assert again.updates == []
    state = await job_state(db_pool, job_id)
    assert state["job"]["partial"] is True and state["job"]["stage"] == "cancelled"
    result = await db_pool.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
    assert result["partial"] is True and result["status"] == "cancelled"
    assert [p["number"] for p in result["pages"]] == [1]


async def test_terminal_event_for_unknown_job_is_dropped_on_last_attempt(db_pool: asyncpg.Pool):
    from shared.errors import JobGone

    event = JobFailed(job_id=uuid.uuid4(), stage="x", reason="Nope.")
    with pytest.raises(JobNotFoundYet):
        await apply_event(db_pool, event)
    with pytest.raises(JobGone):
        await apply_event(db_pool, event, last_attempt=True)


async def test_stall_and_recovery_and_deadline(db_pool: asyncpg.Pool):
    job_id = uuid.uuid4()
    events = three_page_job(job_id)
    await run_events(db_pool, events[:3])
    await db_pool.execute(
        "UPDATE jobs SET updated_at = now() - interval '1 hour', created_at = now()"
        " WHERE job_id = $1",
        job_id,
    )
    out = await sweep_stalls(db_pool, stall_seconds=60, deadline_seconds=10**6)
    mine = [u for u in out.updates if u["job_id"] == str(job_id)]
    assert len(mine) == 1 and mine[0]["stalled"] is True and mine[0]["stage"] == "extracting"
    again = await sweep_stalls(db_pool, stall_seconds=60, deadline_seconds=10**6)
    assert not [u for u in again.updates if u["job_id"] == str(job_id)]

    moved = await apply_event(db_pool, events[3])  # images.extracted: activity
    assert moved.updates[-1]["stalled"] is False

    await db_pool.execute(
        "UPDATE jobs SET created_at = now() - interval '2 hours' WHERE job_id = $1", job_id
    )
    out = await sweep_stalls(db_pool, stall_seconds=10**6, deadline_seconds=3600)
    mine = [u for u in out.updates if u["job_id"] == str(job_id)]
    assert mine[-1]["status"] == "failed" and mine[-1]["final"]
    assert mine[-1]["error"] == deadline_reason(3600)
    assert mine[-1]["error"] == (
        "The job did not finish within the 3600-second deadline and was stopped."
    )
    assert any(isinstance(e, JobFailed) and e.job_id == job_id for e in out.publish)


async def test_a_batch_of_pages_counts_like_its_pages(db_pool: asyncpg.Pool) -> None:
    """pages.extracted carrying pages 1 and 3 gives the same rows, counters and result as
    the two page.extracted it stands for, in any order and redelivered."""
    job_id = uuid.uuid4()
    singles = three_page_job(job_id)
    first, third = singles[2], singles[5]
    assert isinstance(first, PageExtracted) and isinstance(third, PageExtracted)
    assert (first.page, third.page) == (1, 3)
    batch = PagesExtracted(job_id=job_id, pages=[first, third], occurred_at=at(4))
    batched = [e for e in singles if e not in (first, third)] + [batch]

    await run_events(db_pool, singles)
    expected = await job_state(db_pool, job_id)
    rng = random.Random(7)
    for sequence in (batched, rng.sample(batched, len(batched)), [*batched, batch, batch]):
        await db_pool.execute("DELETE FROM jobs WHERE job_id = $1", job_id)
        await run_events(db_pool, sequence)
        state = await job_state(db_pool, job_id)
        check_updates(state)
        assert state["progress"] == expected["progress"]
        assert state["result"] == expected["result"]
