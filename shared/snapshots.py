"""What clients are sent about progress: a job's snapshot (every WebSocket message, GET
/v1/jobs/{id}/progress) and a batch's aggregate and job messages. The event contract is in
shared/events.py; these are the WebSocket and HTTP side of the same vocabulary."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.events import JobPhase, JobStatus, Stage


class StageCounts(BaseModel):
    """One stage's items: due, done and failed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total: int = 0
    done: int = 0
    failed: int = 0


class ProgressSnapshot(BaseModel):
    """What every WebSocket progress message carries (and GET /v1/jobs/{id}/progress answers).

    `seq` strictly increases per job; `percent` never decreases and is 100 only when the job
    completed; `final` is true on the last message a client will get for the job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int
    job_id: uuid.UUID
    status: JobStatus
    stage: JobPhase
    percent: float = Field(ge=0, le=100)
    stages: dict[Stage, StageCounts]
    pages_done: int = Field(ge=0)
    pages_total: int | None = None
    eta_seconds: int | None = None
    stalled: bool = False
    error: str | None = None
    updated_at: datetime | None = None
    final: bool = False
    # AI analysis spent so far (tokens in + out, and USD), live; 0 with the built-in analyzer.
    tokens: int = 0
    cost_usd: float = 0.0


class BatchAggregate(BaseModel):
    """What a batch's jobs add up to, as the progress service last recorded it: the fields
    that the batch's WebSocket message and ingest's batch listing share."""

    status: JobStatus
    jobs_total: int = Field(ge=0)
    jobs_queued: int = Field(ge=0)
    jobs_running: int = Field(ge=0)
    jobs_completed: int = Field(ge=0)
    jobs_failed: int = Field(ge=0)
    jobs_cancelled: int = Field(ge=0)
    pages_done: int = Field(ge=0)
    pages_total: int = Field(ge=0)
    percent: float = Field(ge=0, le=100)
    eta_seconds: int | None = None
    cost_usd: float = Field(default=0.0, ge=0)


class BatchSnapshot(BatchAggregate):
    """A batch's aggregate (GET /v1/batches/{id}; `"type": "batch"` on its WebSocket): the rules
    are in services/progress/batches.py. `seq` is the batch stream's, over both kinds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["batch"] = "batch"
    batch_id: uuid.UUID
    seq: int = Field(ge=0)
    updated_at: datetime | None = None
    final: bool = False


class BatchJobMessage(BaseModel):
    """One job's change on the batch WebSocket (`"type": "job"`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["job"] = "job"
    batch_id: uuid.UUID
    seq: int = Field(ge=1)
    job: ProgressSnapshot
