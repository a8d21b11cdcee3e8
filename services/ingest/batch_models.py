"""Request and response bodies of the batch API (/v1/batches)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.ingest.labels import Labels
from services.ingest.models import JobOptions
from shared.events import JobStatus
from shared.snapshots import BatchAggregate

BATCH_NAME_MAX = 200


class BatchRequest(BaseModel):
    """A batch of URLs (POST /v1/batches with a JSON body)."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(
        default_factory=list,
        description="http(s) addresses of the documents (at most DOCPIPE_BATCH_MAX_URLS, "
        "1000 by default); one job each, in this order.",
    )
    name: str | None = Field(default=None, max_length=BATCH_NAME_MAX)
    labels: Labels = Field(
        default_factory=dict, description="Labels of the batch, given to each of its jobs too."
    )
    options: JobOptions = Field(
        default_factory=JobOptions, description="How every document of the batch is processed."
    )


# The form is streamed by hand (services/ingest/batch_upload.py): this model is what OpenAPI
# shows; its fields are validated as BatchRequest.
class BatchUploadForm(JobOptions):
    """A batch of files (and URLs): POST /v1/batches with a multipart body."""

    files: list[bytes] = Field(
        description="The documents, one `files` part each (at most DOCPIPE_BATCH_MAX_FILES, "
        "100 by default); their formats are judged by their bytes."
    )
    urls: str | None = Field(
        default=None, description="More documents by address: a JSON list, or one URL a line."
    )
    name: str | None = Field(default=None, max_length=BATCH_NAME_MAX)
    labels: str | None = Field(default=None, description='A JSON object: {"project": "alpha"}.')


class BatchJobCreated(BaseModel):
    job_id: uuid.UUID
    filename: str | None
    url: str | None = Field(default=None, description="The address, for a URL job.")


class BatchLinks(BaseModel):
    status: str = Field(description="The batch's status and aggregate (the progress service).")
    events: str = Field(description="The batch's WebSocket (the progress service).")
    jobs: str
    result: str
    cancel: str


class BatchCreated(BaseModel):
    batch_id: uuid.UUID
    name: str | None
    labels: dict[str, str]
    status: JobStatus
    jobs: list[BatchJobCreated] = Field(description="One per document, in submitted order.")
    links: BatchLinks


class BatchView(BatchAggregate):
    """A batch with its aggregate as the progress service last recorded it."""

    batch_id: uuid.UUID
    tenant: str
    name: str | None
    labels: dict[str, str]
    options: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    cancel_requested_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> BatchView:
        return cls.model_validate(dict(row))


class BatchPage(BaseModel):
    items: list[BatchView]
    next_cursor: str | None


class BatchCancelAccepted(BaseModel):
    batch_id: uuid.UUID
    jobs_cancelled: int = Field(
        description="How many unfinished jobs this request cancelled; each turns cancelled "
        "moments later, when the progress service applies it."
    )
