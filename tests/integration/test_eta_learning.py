"""Stage costs are learned from completed jobs and shared through PostgreSQL: what one
replica learns, another reads, and both fold into the same moving average."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from services.progress.costmodel import CostBook, StageCost
from services.progress.learning import learn_completed, reload
from services.progress.models import Outcome
from services.progress.store.stage_costs import WEIGHT_CAP
from shared.db import create_pool
from shared.events import (
    Analysis,
    AnalyzedChunk,
    Chunk,
    ChunksAnalyzed,
    DocumentUploaded,
    Event,
    ExtractionStarted,
    JobCompleted,
    PageExtracted,
    PageOcred,
    PageSource,
)
from shared.settings import Settings
from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient
from tests.integration.test_progress_window import run_events

pytestmark = pytest.mark.integration


def a_start() -> datetime:
    """A start of its own for each job, years ago: the learner divides a job's times by the
    jobs that ran beside it, so these jobs must not meet others (their rows are created now,
    so no deadline sweep fails them)."""
    return datetime(2001, 1, 1, tzinfo=UTC) + timedelta(days=random.randrange(3000, 300_000))


def _chunk(job_id: uuid.UUID, page: int, source: PageSource) -> Chunk:
    return Chunk(
        chunk_id=Chunk.make_id(job_id, page, source, 0),
        page=page,
        index=0,
        source=source,
        start=0,
        end=4,
        text="word",
    )


def _analyzed(job_id: uuid.UUID, chunk: Chunk, at: datetime) -> ChunksAnalyzed:
    analysis = Analysis(analyzer="builtin/1", language="en", word_count=1, keywords=[], entities=[])
    return ChunksAnalyzed(
        job_id=job_id,
        page=chunk.page,
        source=chunk.source,
        items=[AnalyzedChunk(chunk=chunk, analysis=analysis)],
        occurred_at=at,
    )


def timed_job(
    job_id: uuid.UUID, fmt: str, scale: float = 1.0, start: datetime | None = None
) -> list[Event]:
    """4 pages, started at 0: extraction ends at 4 s (1 s a page); pages 2 and 3 need OCR, one
    ocred at 3.5 s (before extraction ends), the other at 8 s (4 s for 2 pages, half of them
    early); 4 chunks, analyzed at 1.5, 4, 5 and 10 s (2 s after the OCR for 4 chunks, 3 of
    them early). `scale` stretches every time."""
    j, t0 = job_id, start or a_start()

    def at(t: float) -> datetime:
        return t0 + timedelta(seconds=t * scale)

    text1, ocr2 = _chunk(j, 1, PageSource.TEXT_LAYER), _chunk(j, 2, PageSource.OCR)
    ocr3, text4 = _chunk(j, 3, PageSource.OCR), _chunk(j, 4, PageSource.TEXT_LAYER)
    text = {"text": "word", "has_text_layer": True}
    return [
        DocumentUploaded(job_id=j, tenant="dev", document_uri="blob://sha256/a", occurred_at=at(0)),
        ExtractionStarted(job_id=j, format=fmt, pages_total=4, occurred_at=at(0)),
        PageExtracted(job_id=j, page=1, chunks=[text1], occurred_at=at(1), **text),
        PageExtracted(job_id=j, page=2, ocr_pending=True, occurred_at=at(2)),
        PageExtracted(job_id=j, page=3, ocr_pending=True, occurred_at=at(3)),
        PageExtracted(job_id=j, page=4, chunks=[text4], occurred_at=at(4), **text),
        PageOcred(job_id=j, page=2, text="word", chunks=[ocr2], occurred_at=at(3.5)),
        PageOcred(job_id=j, page=3, text="word", chunks=[ocr3], occurred_at=at(8)),
        _analyzed(j, text1, at(1.5)),
        _analyzed(j, ocr2, at(4)),
        _analyzed(j, text4, at(5)),
        _analyzed(j, ocr3, at(10)),
    ]  # fmt: skip


def text_job(job_id: uuid.UUID, fmt: str) -> list[Event]:
    """4 text pages, one a second, no OCR; each chunk analyzed half a second later."""
    j, t0 = job_id, a_start()
    events: list[Event] = [
        DocumentUploaded(job_id=j, tenant="dev", document_uri="blob://sha256/ab", occurred_at=t0),
        ExtractionStarted(job_id=j, format=fmt, pages_total=4, occurred_at=t0),
    ]
    for page in range(1, 5):
        chunk = _chunk(j, page, PageSource.TEXT_LAYER)
        at = t0 + timedelta(seconds=page)
        events += [
            PageExtracted(
                job_id=j,
                page=page,
                text="word",
                has_text_layer=True,
                chunks=[chunk],
                occurred_at=at,
            ),
            _analyzed(j, chunk, at + timedelta(seconds=0.5)),
        ]
    return events


async def complete(pool: asyncpg.Pool, events: list[Event]) -> Outcome:
    """Apply the job's events; the outcome that completed it."""
    outcomes = await run_events(pool, events)
    done = [o for o in outcomes if any(isinstance(e, JobCompleted) for e in o.publish)]
    assert len(done) == 1
    return done[0]


async def costs_row(pool: asyncpg.Pool, stage: str, fmt: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT * FROM stage_costs WHERE stage = $1 AND format = $2", stage, fmt
    )
    assert row is not None, (stage, fmt)
    return row


async def test_costs_are_learned_per_stage_and_shared_by_replicas(
    db_pool: asyncpg.Pool, test_settings: Settings
):
    # A format of this test's own: the session stack learns "pdf" from other tests' jobs.
    fmt = f"t{uuid.uuid4().hex[:8]}"
    replica_a, replica_b = CostBook(), CostBook()
    first = await complete(db_pool, timed_job(uuid.uuid4(), fmt))
    await learn_completed(db_pool, first, book=replica_a)

    extract, ocr, analyze = [
        await costs_row(db_pool, s, fmt) for s in ("extract", "ocr", "analyze")
    ]
    assert (extract["seconds_per_unit"], extract["overlap"], extract["units_per_page"]) == (1, 0, 1)
    assert (ocr["seconds_per_unit"], ocr["overlap"], ocr["units_per_page"]) == (2, 0.5, 0.5)
    assert analyze["seconds_per_unit"] == pytest.approx(0.5)
    assert (analyze["overlap"], analyze["units_per_page"]) == (0.75, 1.0)
    assert extract["weight"] == 4 and extract["samples"] == 1
    # The replica that learned rereads at once.
    assert replica_a.for_format(fmt).ocr == StageCost(2.0, 0.5, 0.5)

    # Another replica, with a pool of its own, learns a job twice as slow: one average moves.
    other_pool = await create_pool(test_settings.database_url, max_size=2)
    try:
        slow = await complete(db_pool, timed_job(uuid.uuid4(), fmt, scale=2.0))
        await learn_completed(other_pool, slow, book=replica_b)
        assert replica_b.for_format(fmt).extract.seconds_per_unit == pytest.approx(1.5)
        assert replica_b.for_format(fmt).ocr.seconds_per_unit == pytest.approx(3.0)
        extract = await costs_row(db_pool, "extract", fmt)
        assert extract["weight"] == 8 and extract["samples"] == 2
        # The first replica sees it when it rereads.
        assert replica_a.for_format(fmt).extract.seconds_per_unit == 1.0
        await reload(db_pool, replica_a)
        assert replica_a.for_format(fmt) == replica_b.for_format(fmt)
    finally:
        await other_pool.close()

    # A text-only job teaches OCR's share of pages (none) but not its seconds per page.
    await learn_completed(db_pool, await complete(db_pool, text_job(uuid.uuid4(), fmt)))
    ocr = await costs_row(db_pool, "ocr", fmt)
    assert ocr["seconds_per_unit"] == pytest.approx(3.0) and ocr["samples"] == 2
    assert ocr["units_per_page"] == pytest.approx(0.5 + (0 - 0.5) * 4 / 12)
    assert ocr["weight"] == min(12, WEIGHT_CAP)


async def test_unfinished_and_unknown_jobs_teach_nothing(db_pool: asyncpg.Pool):
    fmt = f"t{uuid.uuid4().hex[:8]}"
    job_id = uuid.uuid4()
    await run_events(db_pool, timed_job(job_id, fmt)[:-1])  # the last chunk never comes
    fake = Outcome(
        publish=[JobCompleted(job_id=job_id, tenant="dev", pages_total=4, chunks_total=4)]
    )
    await learn_completed(db_pool, fake, book=CostBook())
    missing = Outcome(
        publish=[JobCompleted(job_id=uuid.uuid4(), tenant="dev", pages_total=1, chunks_total=0)]
    )
    await learn_completed(db_pool, missing, book=CostBook())
    rows = await db_pool.fetchval("SELECT count(*) FROM stage_costs WHERE format = $1", fmt)
    assert rows == 0


async def test_jobs_that_ran_side_by_side_teach_what_each_would_have_taken_alone(
    db_pool: asyncpg.Pool,
):
    """Two identical jobs at the same time: each ran beside the other all along, so each
    teaches half its wall time."""
    fmt, start = f"t{uuid.uuid4().hex[:8]}", a_start()
    a, b = uuid.uuid4(), uuid.uuid4()
    outcome = await complete(db_pool, timed_job(a, fmt, start=start))
    outcome.publish += (await complete(db_pool, timed_job(b, fmt, start=start))).publish
    await learn_completed(db_pool, outcome, book=CostBook())
    extract, ocr = await costs_row(db_pool, "extract", fmt), await costs_row(db_pool, "ocr", fmt)
    assert extract["seconds_per_unit"] == pytest.approx(0.5)
    assert ocr["seconds_per_unit"] == pytest.approx(1.0)
    assert ocr["overlap"] == 0.5 and extract["weight"] == 8


async def test_the_running_stack_learns_from_the_jobs_it_completes(
    stack: StackClient, db_pool: asyncpg.Pool, tmp_path: Path
):
    pdf = pdf_with_pages(tmp_path / "three.pdf", ["First page.", "Second page.", "Third page."])
    job_id = await stack.submit_ok(pdf, ocr="never")
    final = await stack.wait(job_id)
    assert final["status"] == "completed", final
    finished = await db_pool.fetchval(
        "SELECT finished_at FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
    )
    deadline = time.monotonic() + 30
    while True:
        learned = await db_pool.fetchval(
            "SELECT updated_at FROM stage_costs WHERE stage = 'extract' AND format = 'pdf'"
        )
        if learned is not None and learned >= finished:
            break
        assert time.monotonic() < deadline, "the stack did not learn from the completed job"
        await asyncio.sleep(0.2)


def scan_job(job_id: uuid.UUID, fmt: str) -> list[Event]:
    """4 scanned pages: extracted one a second, each ocred 4 s after its extraction (the last
    at 8 s) and its chunk analyzed at once."""
    j, t0 = job_id, a_start()
    events: list[Event] = [
        DocumentUploaded(job_id=j, tenant="dev", document_uri="blob://sha256/ab", occurred_at=t0),
        ExtractionStarted(job_id=j, format=fmt, pages_total=4, occurred_at=t0),
    ]
    for page in range(1, 5):
        chunk = _chunk(j, page, PageSource.OCR)
        ocred = t0 + timedelta(seconds=page + 4)
        events += [
            PageExtracted(
                job_id=j, page=page, ocr_pending=True, occurred_at=t0 + timedelta(seconds=page)
            ),
            PageOcred(job_id=j, page=page, text="word", chunks=[chunk], occurred_at=ocred),
            _analyzed(j, chunk, ocred),
        ]
    return events


async def test_scans_teach_the_scan_costs_of_their_format(db_pool: asyncpg.Pool):
    fmt = f"t{uuid.uuid4().hex[:8]}"
    await learn_completed(db_pool, await complete(db_pool, scan_job(uuid.uuid4(), fmt)))
    rows = await db_pool.fetch(
        "SELECT DISTINCT format FROM stage_costs WHERE format LIKE $1", f"{fmt}%"
    )
    assert [r["format"] for r in rows] == [f"{fmt}/scan"]
    ocr = await costs_row(db_pool, "ocr", f"{fmt}/scan")
    # OCR outlasted extraction (4 s) by 4 s for 4 pages, none of them before it ended.
    assert (ocr["seconds_per_unit"], ocr["overlap"], ocr["units_per_page"]) == (1.0, 0.0, 1.0)
