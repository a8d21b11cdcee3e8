"""Submitting a document: stream the upload into the blob store, validate its options, answer
a reused Idempotency-Key, judge the format by the bytes, then record the job and its
DocumentUploaded event in one transaction and publish it. Every refusal is a domain error
(services/ingest/errors.py); the HTTP layer maps them to statuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass

import asyncpg
import structlog
from pydantic import ValidationError

from services.ingest import repository as repo
from services.ingest.admission import check_priority, check_room
from services.ingest.analysis import FIELD, parse_analysis
from services.ingest.callbacks import check_callback_url
from services.ingest.dedup import create_job_or_reuse, dedup_key
from services.ingest.errors import (
    EmptyUpload,
    IdempotencyConflict,
    InvalidRequest,
    MissingFile,
    NoTenant,
    UnsupportedFormat,
    UploadRejected,
    UploadTooLarge,
)
from services.ingest.fair_share import TenantLimits
from services.ingest.filenames import sanitize_filename
from services.ingest.models import JobOptions, UploadOptions
from services.ingest.multipart import MultipartError, boundary_of
from services.ingest.ocr_lang import checked_ocr_lang
from services.ingest.outbox import publish_now
from services.ingest.runtime import IngestRuntime
from services.ingest.upload import (
    MULTIPART_SLACK_BYTES,
    ReceivedUpload,
    discard_blob,
    receive_upload,
    sniff_blob,
    unsupported_upload_reason,
    with_read_timeout,
)
from shared.analysis import AnalysisOptions
from shared.events import DocumentUploaded, JobStatus
from shared.secret_box import seal_password
from shared.sniff import MEDIA_TYPES

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class UploadRequest:
    """An upload as the HTTP layer hands it over."""

    tenant: str | None
    content_type: str | None
    content_length: str | None
    body: AsyncIterable[bytes]
    idempotency_key: str | None = None
    correlation_id: str = ""


@dataclass(frozen=True)
class SubmittedJob:
    job_id: uuid.UUID
    status: JobStatus
    filename: str | None
    format: str | None
    size_bytes: int | None
    sha256: str | None
    created: bool  # False: the Idempotency-Key named a job that already existed
    deduplicated_from: uuid.UUID | None = None  # the identical job whose result it reuses

    @classmethod
    def existing(cls, row: asyncpg.Record) -> SubmittedJob:
        return cls(
            job_id=row["job_id"],
            status=JobStatus(row["status"]),
            filename=row["filename"],
            format=row["format"],
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            created=False,
            deduplicated_from=row.get("deduplicated_from"),
        )

    @classmethod
    def replayed(
        cls, existing: asyncpg.Record, column: str, document: str, options: JobOptions
    ) -> SubmittedJob:
        """The job a reused Idempotency-Key names, if it was the same document (`column` of
        its row: the bytes' hash, or the URL) with the same options; else refused."""
        same = (
            existing[column] == document
            and existing["ocr_mode"] == options.ocr.value
            and existing["ocr_lang"] == options.ocr_lang
            and existing["docx_comments"] == options.docx_comments
            and existing["pdf_tables"] == options.pdf_tables
            and existing["priority"] == options.priority
        )
        if not same:
            raise IdempotencyConflict(existing["job_id"])
        return cls.existing(existing)


async def submit(runtime: IngestRuntime, request: UploadRequest) -> SubmittedJob:
    """Accept one upload as a new job, or answer with the job its Idempotency-Key names."""
    if request.tenant is None:
        raise NoTenant()
    tenant = request.tenant
    settings = runtime.settings
    limits = TenantLimits.from_settings(settings)
    refuse_unreadable_body(request, settings.max_upload_bytes)
    if not await _names_a_job(runtime, tenant, request.idempotency_key):
        # A reused Idempotency-Key gets its job back (or a 422) even when the tenant is full.
        await check_room(runtime.pool, limits, tenant, settings.admission_retry_after_seconds)
    with runtime.upload_slots.hold(tenant):
        upload = await _receive(runtime, request)
        options = checked_ocr_lang(parse_options(upload.fields), settings, ("body",))
        check_priority(limits, tenant, options.priority, ("body", "priority"))
        await check_callback_url(options.callback_url, runtime.settings)
        analysis = parse_analysis(upload.fields.get(FIELD), runtime.settings.analysis_profiles)
        if request.idempotency_key:
            existing = await repo.find_by_idempotency_key(
                runtime.pool, tenant, request.idempotency_key
            )
            if existing is not None:
                return replay(existing, upload, options)
        fmt = await _judge_format(runtime, upload)
        password_token = seal_password(runtime.settings, options.password)
        job = new_job(request, tenant, upload, options, fmt, analysis, password_token)
        return await _create_job(runtime, request, job, upload, options)


async def _names_a_job(runtime: IngestRuntime, tenant: str, idempotency_key: str | None) -> bool:
    if not idempotency_key:
        return False
    return await repo.find_by_idempotency_key(runtime.pool, tenant, idempotency_key) is not None


def refuse_unreadable_body(request: UploadRequest, max_upload_bytes: int) -> None:
    """Refuse before reading anything: a body that is no multipart form, or one whose
    Content-Length is already over the limit."""
    if boundary_of(request.content_type) is None:
        raise MissingFile()
    declared = request.content_length
    if declared and declared.isdigit() and int(declared) > max_upload_bytes + MULTIPART_SLACK_BYTES:
        raise UploadTooLarge(max_upload_bytes)


async def _receive(runtime: IngestRuntime, request: UploadRequest) -> ReceivedUpload:
    assert request.content_type is not None  # refuse_unreadable_body checked it
    settings = runtime.settings
    body = with_read_timeout(request.body, settings.upload_read_timeout_seconds)
    try:
        upload = await receive_upload(
            request.content_type, body, runtime.blobs, settings.max_upload_bytes
        )
    except MultipartError as exc:
        raise UploadRejected(str(exc)) from None
    if upload is None:
        raise MissingFile()
    return upload


def parse_options(fields: Mapping[str, str]) -> UploadOptions:
    """The form's options; an empty field means its default. The blob stays on a refusal: it
    may be shared with a concurrent valid upload of the same bytes."""
    try:
        return UploadOptions.model_validate(
            {k: v for k, v in fields.items() if k in UploadOptions.model_fields and v != ""}
        )
    except ValidationError as exc:
        raise InvalidRequest(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def replay(
    existing: asyncpg.Record, upload: ReceivedUpload, options: UploadOptions
) -> SubmittedJob:
    """A reused Idempotency-Key: the same upload (bytes and options) gets its job again; a
    different one is refused. The filename is display metadata and may differ. The password is
    not stored, so it cannot be compared."""
    return SubmittedJob.replayed(existing, "sha256", upload.sha256, options)


async def _judge_format(runtime: IngestRuntime, upload: ReceivedUpload) -> str:
    """The document's format by its bytes; an empty or unsupported upload's blob is removed
    (the same bytes always get the same verdict, so no job can be using it)."""
    if upload.size_bytes == 0:
        await discard_blob(runtime.blobs, upload.uri)
        raise EmptyUpload()
    fmt = await sniff_blob(runtime.blobs, upload.uri, upload.client_filename)
    if fmt is None:
        reason = await unsupported_upload_reason(runtime.blobs, upload.uri)
        await discard_blob(runtime.blobs, upload.uri)
        raise UnsupportedFormat(reason)
    return fmt


def new_job(
    request: UploadRequest,
    tenant: str,
    upload: ReceivedUpload,
    options: UploadOptions,
    fmt: str,
    analysis: AnalysisOptions | None = None,
    password_token: str | None = None,
) -> repo.NewJob:
    """The job to record for an accepted upload, with its DocumentUploaded event. The
    analysis options shape the result, so they are part of what makes two uploads the same.
    The password travels only sealed (password_token, shared.secret_box)."""
    event = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=upload.uri,
        filename=sanitize_filename(upload.client_filename) or f"upload.{fmt}",
        ocr=options.ocr,
        ocr_lang=options.ocr_lang,
        docx_comments=options.docx_comments,
        pdf_tables=options.pdf_tables,
        password_token=password_token,
        priority=options.priority,
        size_bytes=upload.size_bytes,
        content_type=MEDIA_TYPES[fmt],
        analysis=analysis,
    )
    return repo.NewJob(
        event,
        upload.sha256,
        fmt,
        request.idempotency_key,
        options.labels,
        callback_url=options.callback_url,
        dedup_key=dedup_key(
            upload.sha256, options, analysis.stored() if analysis is not None else None
        ),
        keep_images=options.keep_images,
    )


async def _create_job(
    runtime: IngestRuntime,
    request: UploadRequest,
    job: repo.NewJob,
    upload: ReceivedUpload,
    options: UploadOptions,
) -> SubmittedJob:
    event, filename, fmt, tenant = job.event, job.event.filename, job.format, job.event.tenant
    try:
        async with runtime.pool.acquire() as conn:
            created = await create_job_or_reuse(
                conn,
                job,
                {"x-correlation-id": request.correlation_id},
                force=options.force,
                blobs=runtime.blobs,
                limits=TenantLimits.from_settings(runtime.settings),
            )
    except asyncpg.UniqueViolationError:
        # A concurrent request with the same Idempotency-Key won the race.
        existing = await repo.find_by_idempotency_key(
            runtime.pool, tenant, request.idempotency_key or ""
        )
        if existing is None:
            raise
        return replay(existing, upload, options)
    if created.outbox_id is not None:
        await publish_now(runtime.pool, runtime.bus, created.outbox_id)
    log.info(
        "job accepted",
        job_id=str(event.job_id),
        format=fmt,
        size=upload.size_bytes,
        deduplicated_from=str(created.deduplicated_from) if created.deduplicated_from else None,
    )
    return SubmittedJob(
        job_id=event.job_id,
        status=JobStatus.QUEUED,
        filename=filename,
        format=fmt,
        size_bytes=upload.size_bytes,
        sha256=upload.sha256,
        created=True,
        deduplicated_from=created.deduplicated_from,
    )
