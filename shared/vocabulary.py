"""The words every service shares about a job: its status, its phase, its counted stages, a
page's source and the OCR mode. Re-exported by shared.events, the contract they belong to."""

from __future__ import annotations

from enum import StrEnum


class OcrMode(StrEnum):
    AUTO = "auto"  # OCR pages without a text layer, and large embedded images
    ALWAYS = "always"  # OCR every page, even those with a text layer
    NEVER = "never"  # text layer only


class PageSource(StrEnum):
    TEXT_LAYER = "text-layer"
    OCR = "ocr"


class Stage(StrEnum):
    """A counted stage of a job: its due, done and failed items live in job_progress."""

    EXTRACT = "extract"
    OCR = "ocr"
    ANALYZE = "analyze"


class JobStatus(StrEnum):
    """Where a job stands. Only the progress service writes it (ingest writes the first row)."""

    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
)
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})


class JobPhase(StrEnum):
    """What a snapshot's `stage` field shows: the stage a running job is in, else its status."""

    QUEUED = "queued"
    EXTRACTING = "extracting"
    OCR = "ocr"
    ANALYZING = "analyzing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
