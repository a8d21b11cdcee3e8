"""What an event does to a job, without a database: the job state progress keeps, the state
change an event causes, and the counter delta an item's first write causes.

Item writes are first-write-wins in the store; the store reports what it found beside the
row it wrote (was the page already ocred? was the OCR result awaited?), and the functions
here turn that into a counter delta. A duplicate writes nothing and so moves nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.progress.arithmetic import Counts, StageCount
from shared.analysis import LlmTaskStatus
from shared.events import (
    TERMINAL_STATUSES,
    ChunksAnalyzed,
    DocumentSummarize,
    DocumentSummarized,
    DocumentUploaded,
    Event,
    ExtractionAccepted,
    ExtractionStarted,
    ImagesExtracted,
    JobCancelled,
    JobFailed,
    JobPhase,
    JobStatus,
    PageExtracted,
    PageOcred,
    PagesExtracted,
)


@dataclass
class JobState:
    """The job columns progress writes."""

    status: JobStatus
    stage: JobPhase
    percent: float
    format: str | None
    pages_total: int | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    partial: bool
    stalled: bool
    # AI analysis: tokens and USD spent so far, whether the document summary was asked for,
    # and its outcome once it came (services.progress.analysis).
    tokens: int = 0
    cost_usd: float = 0.0
    summary_requested: bool = False
    document_summary: dict[str, Any] | None = None
    # What the document says about itself (ExtractionStarted.metadata), first one kept.
    document_metadata: dict[str, Any] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> JobState:
        return cls(
            status=JobStatus(row["status"]),
            stage=JobPhase(row["stage"]),
            percent=round(float(row["percent"]), 1),
            format=row["format"],
            pages_total=row["pages_total"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            partial=row["partial"],
            stalled=row["stalled"],
            tokens=int(row.get("tokens") or 0),
            cost_usd=float(row.get("cost_usd") or 0.0),
            summary_requested=row.get("summary_requested_at") is not None,
            document_summary=_json_object(row.get("document_summary")),
            document_metadata=_json_object(row.get("document_metadata")),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def _json_object(value: Any) -> dict[str, Any] | None:
    """A jsonb column as asyncpg returns it (text) or as given (a dict)."""
    if value is None:
        return None
    loaded = json.loads(value) if isinstance(value, str) else value
    return dict(loaded)


NO_CHANGE = Counts()
# Events whose effect on the job row is only "it moved" (their items count in the store).
# Looked up by exact type: isinstance on pydantic models is an ABC check, and this runs for
# every event.
_ACTIVITY_ONLY = frozenset(
    {
        DocumentUploaded,
        ImagesExtracted,
        PageExtracted,
        PagesExtracted,
        PageOcred,
        ChunksAnalyzed,
        DocumentSummarize,
    }
)


def advance(state: JobState, event: Event, revived_at: datetime | None = None) -> Counts:
    """Apply what `event` says about the job itself to `state` (in place) and return the
    counter delta that follows from the job row alone (items move counters in the store).
    `revived_at`: when a dead-letter replay last brought the job back; a job.failed from
    before then is one the replay has undone."""
    if state.terminal:
        return NO_CHANGE
    kind = type(event)
    if state.status == JobStatus.QUEUED and kind is not DocumentUploaded:
        state.status = JobStatus.PROCESSING
    if kind is not DocumentSummarize:
        # Any event but the echo of progress's own document.summarize asks again, should the
        # job still await its summary: a request whose publish was lost is sent once more.
        state.summary_requested = False
    if kind in _ACTIVITY_ONLY:
        return NO_CHANGE
    match event:
        case ExtractionAccepted():
            state.format = state.format or event.format
        case ExtractionStarted():
            state.format = state.format or event.format
            state.started_at = state.started_at or event.occurred_at
            if state.document_metadata is None and event.metadata is not None:
                state.document_metadata = event.metadata.model_dump(exclude_none=True)
            if state.pages_total is None:
                state.pages_total = event.pages_total
                return Counts(extract=StageCount(event.pages_total, 0, 0))
        case JobFailed() if revived_at is not None and event.occurred_at <= revived_at:
            pass  # a failure a dead-letter replay has since undone (a redelivered job.failed)
        case JobFailed():
            state.status = JobStatus.FAILED
            state.error = event.reason
            state.finished_at = state.finished_at or event.occurred_at
        case JobCancelled():
            state.status = JobStatus.CANCELLED
            state.partial = True
            state.finished_at = state.finished_at or event.occurred_at
        case DocumentSummarized():
            record_document_summary(state, event)
        case _:
            pass
    return NO_CHANGE


def page_extracted_delta(ev: PageExtracted, *, ocred: bool, ocr_failed: bool) -> Counts:
    """The counters a page's first extraction moves. `ocred`/`ocr_failed`: its OCR result
    had already arrived (events of one page may come in either order)."""
    ocr = StageCount()
    if ev.ocr_pending:
        ocr = StageCount(1, int(ocred), int(ocred and ocr_failed))
    return Counts(
        extract=StageCount(0, 1, int(ev.error is not None)),
        ocr=ocr,
        analyze=StageCount(ev.chunks_total, 0, 0),
    )


def page_ocred_delta(ev: PageOcred, *, awaited: bool) -> Counts:
    """The counters a page's first OCR result moves. `awaited`: its extraction already
    announced it needs OCR (else that extraction counts it when it comes)."""
    ocr = StageCount(0, 1, int(ev.error is not None)) if awaited else StageCount()
    return Counts(ocr=ocr, analyze=StageCount(ev.chunks_total, 0, 0))


CHUNK_ANALYZED = Counts(analyze=StageCount(0, 1, 0))


def record_document_summary(state: JobState, event: DocumentSummarized) -> None:
    """The first answer is kept (a redelivery changes nothing); its spend counts once. A
    summary the budget had no room for makes the job partial with the engine's sentence."""
    if state.document_summary is not None:
        return
    state.document_summary = event.model_dump(
        mode="json", include={"status", "summary", "reason", "cost_usd", "tokens"}
    )
    state.tokens += event.tokens
    state.cost_usd += event.cost_usd
    if event.status == LlmTaskStatus.OVER_BUDGET:
        note_partial(state, event.reason)


def note_partial(state: JobState, reason: str | None) -> None:
    """Some of the job's analysis was not done (a budget ran out): the job completes partial,
    with the first such sentence as its note."""
    state.partial = True
    state.error = state.error or reason


def deadline_reason(deadline_seconds: float) -> str:
    return (
        f"The job did not finish within the {deadline_seconds:g}-second deadline and was stopped."
    )


def first_progress_seconds(row: Mapping[str, Any], state: JobState, now: datetime) -> float | None:
    """Seconds from creation to the job's first move out of 'queued', when this is it."""
    if row["status"] != JobStatus.QUEUED or state.status == JobStatus.QUEUED:
        return None
    if row["first_progress_at"]:
        return None
    created: datetime = row["created_at"]
    return max(0.0, (now - created).total_seconds())
