"""Request options and response bodies of the job API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.ingest.labels import Labels
from shared.bounds import PASSWORD_MAX
from shared.events import JobStatus, OcrMode
from shared.ocr_languages import OcrLang


class JobOptions(BaseModel):
    """How a document is processed (an upload's form fields, a URL job's or a batch's body)."""

    model_config = ConfigDict(extra="forbid")

    priority: int = Field(default=0, ge=0, le=9)
    ocr: OcrMode = OcrMode.AUTO
    ocr_lang: OcrLang | None = Field(
        default=None,
        description="The languages OCR reads the document in: tesseract codes joined by '+', "
        "e.g. 'deu+eng'. Absent: the deployment's setting (DOCPIPE_OCR_LANG). A language that "
        "is not installed is refused (422, naming it and listing the installed ones).",
    )
    docx_comments: bool = Field(
        default=False,
        description="Read a Word document's comments too, each after the text of the page it "
        "is on, as 'Comment (author): text'. Other formats ignore it.",
    )
    pdf_tables: bool | None = Field(
        default=None,
        description="Find a PDF's ruled tables and put them in the result as rows of cells "
        "(pages[].tables). Absent: the deployment's setting (DOCPIPE_PDF_TABLES, off unless "
        "set: the table finder costs about as much again as reading a text PDF's pages). "
        "Other formats' tables are always kept.",
    )
    password: str | None = Field(
        default=None,
        max_length=PASSWORD_MAX,
        description="for encrypted PDFs; it travels and rests only encrypted",
        repr=False,  # never in a logged or printed model
    )
    # Duplicates and retention (services/ingest/dedup.py, shared/purge.py).
    force: bool = Field(
        default=False,
        description="Process the document again even when an identical one (same bytes and "
        "options) has completed or is running for this tenant; by default the job reuses "
        "that result and completes at once (deduplicated_from).",
    )
    keep_images: bool = Field(
        default=False,
        description="Keep the page images rendered for OCR; by default they are deleted once "
        "their OCR is recorded.",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="An http(s) URL that receives a signed webhook when the job completes, "
        "fails or is cancelled (Standard Webhooks; see GET /v1/jobs/{id}/webhooks).",
    )


class UploadOptions(JobOptions):
    """The form fields sent with the file."""

    labels: Labels = Field(
        default_factory=dict,
        description='Key/value labels, as a JSON object ({"project": "alpha"}); list jobs '
        "by them with GET /v1/jobs?label=key:value.",
    )


class UrlJobRequest(UploadOptions):
    """A document to download: POST /v1/jobs with a JSON body."""

    url: str = Field(description="http(s) address of the document; the extractor downloads it.")


# The body is streamed to the blob store by hand (services/ingest/upload.py), so FastAPI does
# not parse it: this model is what OpenAPI shows, and the options are validated as UploadOptions.
class UploadForm(UploadOptions):
    """The upload: one document and its processing options."""

    file: bytes = Field(description="The document; its format is judged by its bytes.")
    analysis: str | None = Field(
        default=None,
        description='AI analysis, a JSON object: {"backend": "builtin"|"llm", "tasks": '
        '["summary", "classify", "extract"], "labels": [...] (classify), "schema": {...} '
        '(extract: a JSON Schema of "type": "object"), "model": null, "max_cost_usd": 0.5, '
        '"profile": null (a named profile of the deployment, which the other members '
        "override)}. Absent: the deployment's default (the built-in analyzer).",
    )


class JobLinks(BaseModel):
    self: str
    result: str
    progress: str
    events: str


class JobCreated(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    filename: str | None
    format: str | None
    size_bytes: int | None
    sha256: str | None
    links: JobLinks
    deduplicated_from: uuid.UUID | None = Field(
        default=None,
        description="The identical job whose result this one reuses: it completes at once "
        "(or when that job completes) and costs nothing.",
    )


class JobView(BaseModel):
    job_id: uuid.UUID
    tenant: str
    status: JobStatus
    stage: str
    percent: float
    error: str | None = Field(
        description="Why the job failed or was cancelled, or (a completed job with partial "
        "true) why its AI analysis stopped, as a sentence."
    )
    filename: str | None
    format: str | None
    ocr: OcrMode
    ocr_lang: str | None = Field(
        default=None, description="The OCR languages asked for (None: the deployment's)."
    )
    priority: int
    size_bytes: int | None
    pages_total: int | None
    stalled: bool
    partial: bool
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    cancel_requested_at: datetime | None = Field(
        default=None,
        description="When a cancel was requested; the status turns cancelled once the "
        "progress service has applied it, moments later.",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    batch_id: uuid.UUID | None = Field(default=None, description="The batch it was submitted in.")
    deduplicated_from: uuid.UUID | None = Field(
        default=None, description="The identical job whose result this one reuses."
    )
    tokens: int = Field(default=0, description="AI analysis tokens (in + out) spent so far.")
    cost_usd: float = Field(default=0.0, description="AI analysis spend so far, in USD.")

    @classmethod
    def from_row(cls, row: Any) -> JobView:
        return cls(
            job_id=row["job_id"],
            tenant=row["tenant"],
            status=row["status"],
            stage=row["stage"],
            percent=row["percent"],
            error=row["error"],
            filename=row["filename"],
            format=row["format"],
            ocr=row["ocr_mode"],
            ocr_lang=row.get("ocr_lang"),
            priority=row["priority"],
            size_bytes=row["size_bytes"],
            pages_total=row["pages_total"],
            stalled=row["stalled"],
            partial=row["partial"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            cancel_requested_at=row["cancel_requested_at"],
            labels=row["labels"],
            batch_id=row["batch_id"],
            deduplicated_from=row.get("deduplicated_from"),
            tokens=row.get("tokens") or 0,
            cost_usd=row.get("cost_usd") or 0.0,
        )


class JobPage(BaseModel):
    items: list[JobView]
    next_cursor: str | None


class CancelAccepted(BaseModel):
    job_id: uuid.UUID
    status: JobStatus = Field(
        description="cancelled: the status the job takes. The progress service applies the "
        "cancel moments after this answer; until then GET may still show the previous status."
    )


class Problem(BaseModel):
    detail: str
