"""Shapes of the progress service: what applying events produced (to deliver after commit),
and the bodies its HTTP API answers with."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel

from services.progress.arithmetic import Snapshot
from services.progress.batches import StreamMessage
from shared.events import Event, JobPhase, JobStatus, Stage
from shared.snapshots import ProgressSnapshot, StageCounts


@dataclass
class Outcome:
    """What a write did to one job, delivered only after its transaction committed."""

    updates: list[Snapshot] = field(default_factory=list)  # push to clients
    publish: list[Event] = field(default_factory=list)  # follow-up events
    # Set when this write moved the job out of 'queued' for the first time (for metrics).
    first_progress_seconds: float | None = None
    # The batch streams' new messages (see batch_refresh), pushed with the updates.
    batch_messages: list[StreamMessage] = field(default_factory=list)


class AdminJob(BaseModel):
    """A job as the admin listing shows it: its row, per-stage counts and seq."""

    job_id: str
    tenant: str
    filename: str | None
    status: JobStatus
    stage: JobPhase
    percent: float
    seq: int
    format: str | None
    pages_total: int | None
    pages_done: int
    stages: dict[Stage, StageCounts]
    stalled: bool
    error: str | None
    partial: bool
    tokens: int = 0  # AI analysis: tokens in + out on the call ledger
    cost_usd: float = 0.0  # ... and their cost
    created_at: datetime | None
    started_at: datetime | None
    updated_at: datetime | None
    finished_at: datetime | None


class AdminJobList(BaseModel):
    items: list[AdminJob]
    limit: int


__all__ = ["AdminJob", "AdminJobList", "Outcome", "ProgressSnapshot"]
