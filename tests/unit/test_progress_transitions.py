"""What an event does to a job, without a database (services/progress/transitions.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.progress.arithmetic import Counts, StageCount
from services.progress.transitions import (
    JobState,
    advance,
    first_progress_seconds,
    page_extracted_delta,
    page_ocred_delta,
)
from shared.events import (
    DocumentUploaded,
    ExtractionAccepted,
    ExtractionStarted,
    ImagesExtracted,
    JobCancelled,
    JobFailed,
    JobPhase,
    JobStatus,
    PageExtracted,
    PageOcred,
)

JOB = uuid.uuid4()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def row(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "status": "queued",
        "stage": "queued",
        "percent": 0,
        "format": None,
        "pages_total": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "partial": False,
        "stalled": False,
        "first_progress_at": None,
        "created_at": T0,
    }
    return {**base, **changes}


def state(**changes: Any) -> JobState:
    return JobState.of(row(**changes))


class TestAdvance:
    def test_the_row_reads_as_typed_state(self):
        s = state(status="processing", stage="ocr", percent=12.345)
        assert s.status is JobStatus.PROCESSING and s.stage is JobPhase.OCR
        assert s.percent == 12.3 and not s.terminal

    def test_an_upload_leaves_a_queued_job_queued(self):
        s = state()
        upload = DocumentUploaded(job_id=JOB, tenant="dev", document_uri="blob://sha256/ab")
        assert advance(s, upload) == Counts()
        assert s == state()

    def test_any_other_event_starts_the_job(self):
        s = state()
        advance(s, ImagesExtracted(job_id=JOB, page=1, images=[]))
        assert s.status is JobStatus.PROCESSING

    def test_acceptance_sets_the_format_once(self):
        s = state(format="pdf")
        advance(s, ExtractionAccepted(job_id=JOB, format="docx"))
        assert s.format == "pdf"

    def test_extraction_start_announces_the_pages_once(self):
        s = state()
        started = ExtractionStarted(job_id=JOB, format="pdf", pages_total=3, occurred_at=T0)
        assert advance(s, started) == Counts(extract=StageCount(3, 0, 0))
        assert (s.pages_total, s.format, s.started_at) == (3, "pdf", T0)
        assert advance(s, started) == Counts(), "a redelivered start announces nothing"

    def test_failure_ends_the_job_with_its_reason(self):
        s = state(status="processing")
        advance(s, JobFailed(job_id=JOB, stage="ocr", reason="Broken.", occurred_at=T0))
        assert s.status is JobStatus.FAILED and s.error == "Broken." and s.finished_at == T0

    def test_a_failure_undone_by_a_replay_changes_nothing(self):
        s = state(status="processing")
        failed = JobFailed(job_id=JOB, stage="ocr", reason="x", occurred_at=T0)
        advance(s, failed, revived_at=T0 + timedelta(seconds=1))
        assert s.status is JobStatus.PROCESSING and s.error is None

    def test_cancel_ends_the_job_partial(self):
        s = state(status="processing")
        advance(s, JobCancelled(job_id=JOB, occurred_at=T0))
        assert s.status is JobStatus.CANCELLED and s.partial and s.finished_at == T0

    @pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
    def test_an_ended_job_takes_no_more_changes(self, status: str):
        s = state(status=status, stage=status)
        before = state(status=status, stage=status)
        for event in (
            ExtractionStarted(job_id=JOB, format="pdf", pages_total=3),
            JobFailed(job_id=JOB, stage="x", reason="late"),
            JobCancelled(job_id=JOB),
        ):
            assert advance(s, event) == Counts()
        assert s == before


class TestItemDeltas:
    def test_a_text_page_counts_as_extracted_with_its_chunks(self):
        page = PageExtracted(job_id=JOB, page=1, text="x", has_text_layer=True)
        delta = page_extracted_delta(page, ocred=False, ocr_failed=False)
        assert delta == Counts(extract=StageCount(0, 1, 0), analyze=StageCount(0, 0, 0))

    def test_a_scan_awaits_ocr_unless_its_result_came_first(self):
        scan = PageExtracted(job_id=JOB, page=2, ocr_pending=True)
        assert page_extracted_delta(scan, ocred=False, ocr_failed=False).ocr == StageCount(1, 0, 0)
        assert page_extracted_delta(scan, ocred=True, ocr_failed=True).ocr == StageCount(1, 1, 1)

    def test_a_failed_page_counts_as_done_and_failed(self):
        page = PageExtracted(job_id=JOB, page=1, error="Unreadable.")
        assert page_extracted_delta(page, ocred=False, ocr_failed=False).extract == StageCount(
            0, 1, 1
        )

    def test_ocr_counts_only_when_awaited(self):
        ocred = PageOcred(job_id=JOB, page=2, text="x", error="Blurry.")
        assert page_ocred_delta(ocred, awaited=True).ocr == StageCount(0, 1, 1)
        assert page_ocred_delta(ocred, awaited=False).ocr == StageCount()


def test_first_progress_is_measured_once():
    now = T0 + timedelta(seconds=2)
    moving = state(status="processing")
    assert first_progress_seconds(row(), moving, now) == 2.0
    assert first_progress_seconds(row(), state(), now) is None
    assert first_progress_seconds(row(first_progress_at=T0), moving, now) is None
    assert first_progress_seconds(row(status="processing"), moving, now) is None
