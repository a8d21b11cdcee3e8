"""The head of a result is pure: timings from the events' own clocks, totals rounded.
(The text, pages and chunks are assembled by the database:
tests/integration/test_progress_result_sql.py.)"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from services.progress.result import ItemTotals, finished_at_of, result_head
from shared.events import JobStatus

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
JOB = {
    "job_id": uuid.UUID(int=1),
    "filename": "doc.pdf",
    "format": "pdf",
    "pages_total": 3,
    "created_at": T0,
    "started_at": T0 + timedelta(seconds=2),
}


def test_result_head() -> None:
    totals = ItemTotals(last_at=T0 + timedelta(seconds=13), ocr_seconds=1.7500001, cost_usd=0.6)
    finished = finished_at_of(JOB["started_at"], totals)
    head = result_head(JOB, totals, status=JobStatus.COMPLETED, finished_at=finished)
    assert head["job_id"] == str(JOB["job_id"]) and head["status"] == "completed"
    assert (head["filename"], head["format"], head["pages_total"]) == ("doc.pdf", "pdf", 3)
    timings = head["timings"]
    assert timings["queued_seconds"] == 2.0
    assert timings["finished_at"] == (T0 + timedelta(seconds=13)).isoformat()
    assert timings["processing_seconds"] == 11.0
    assert timings["ocr_seconds"] == 1.75
    assert head["cost"] == {"total_usd": 0.6}
    assert head["partial"] is False
    assert not {"text", "pages", "chunks", "failed_pages"} & set(head)  # the database's part


def test_finished_at_is_the_latest_work_or_the_start() -> None:
    started = JOB["started_at"]
    assert finished_at_of(started, ItemTotals()) == started
    assert finished_at_of(started, ItemTotals(last_at=T0)) == started  # never before the start
    assert finished_at_of(None, ItemTotals()) is None


def test_empty_document() -> None:
    job = {**JOB, "pages_total": 0}
    head = result_head(job, ItemTotals(), status=JobStatus.COMPLETED, finished_at=T0)
    assert head["timings"]["processing_seconds"] == 0.0 and head["cost"] == {"total_usd": 0.0}
