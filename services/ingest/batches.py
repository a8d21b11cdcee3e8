"""Submitting and cancelling batches: several documents (uploaded files and/or URLs) with one
name, labels and options, recorded as one batch row and its jobs in one transaction, with one
DocumentUploaded per job through the outbox. A batch is taken whole or refused whole."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from pydantic import ValidationError

from services.ingest import batch_store as store
from services.ingest.admission import check_priority, check_room
from services.ingest.batch_models import BatchRequest
from services.ingest.batch_upload import receive_batch_form
from services.ingest.errors import (
    BatchNotFound,
    EmptyBatch,
    InvalidDocumentUrl,
    InvalidRequest,
    NotABatchBody,
    NoTenant,
    TooManyInBatch,
    UnsupportedFormat,
    UploadRejected,
)
from services.ingest.fair_share import TenantLimits
from services.ingest.filenames import sanitize_filename
from services.ingest.models import JobOptions
from services.ingest.multipart import MultipartError, boundary_of
from services.ingest.ocr_lang import checked_ocr_lang
from services.ingest.outbox import publish_many
from services.ingest.runtime import IngestRuntime
from services.ingest.submit import UploadRequest, refuse_unreadable_body
from services.ingest.upload import (
    ReceivedUpload,
    sniff_blob,
    unsupported_upload_reason,
    with_read_timeout,
)
from services.ingest.urls import filename_of_url, url_problem
from shared.events import DocumentUploaded
from shared.secret_box import seal_password
from shared.settings import Settings
from shared.sniff import MEDIA_TYPES

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SubmittedBatch:
    batch_id: uuid.UUID
    name: str | None
    labels: dict[str, str]
    jobs: list[store.BatchJob]


def check_urls(urls: Sequence[str], settings: Settings, loc: tuple[str, ...]) -> None:
    """Refuse the first URL the extractor could never fetch (422 naming it and why)."""
    if len(urls) > settings.batch_max_urls:
        raise TooManyInBatch("URLs", settings.batch_max_urls)
    for index, url in enumerate(urls):
        problem = url_problem(url, settings.fetch_allowed_ports, settings.allow_private_urls)
        if problem is not None:
            raise InvalidDocumentUrl((*loc, str(index)), problem)


async def submit_batch_json(
    runtime: IngestRuntime, tenant: str | None, body: BatchRequest, correlation_id: str = ""
) -> SubmittedBatch:
    """A batch of URLs."""
    if tenant is None:
        raise NoTenant()
    check_urls(body.urls, runtime.settings, ("body", "urls"))
    await _check_room(runtime, tenant)
    return await _create(runtime, tenant, body, [], correlation_id)


async def _check_room(runtime: IngestRuntime, tenant: str) -> None:
    """A batch is refused (429) only when the tenant is already at its limit of jobs queued
    and in flight; one that is not is taken whole, even past that limit (decision 1080)."""
    settings = runtime.settings
    limits = TenantLimits.from_settings(settings)
    await check_room(runtime.pool, limits, tenant, settings.admission_retry_after_seconds)


async def submit_batch_form(runtime: IngestRuntime, request: UploadRequest) -> SubmittedBatch:
    """A batch of uploaded files (and URLs) in one multipart form."""
    if request.tenant is None:
        raise NoTenant()
    if boundary_of(request.content_type) is None:
        raise NotABatchBody()
    settings = runtime.settings
    refuse_unreadable_body(request, settings.max_upload_bytes * settings.batch_max_files)
    assert request.content_type is not None  # refuse_unreadable_body checked it
    await _check_room(runtime, request.tenant)
    with runtime.upload_slots.hold(request.tenant):
        try:
            form = await receive_batch_form(
                request.content_type,
                with_read_timeout(request.body, settings.upload_read_timeout_seconds),
                runtime.blobs,
                max_bytes=settings.max_upload_bytes,
                max_files=settings.batch_max_files,
            )
        except MultipartError as exc:
            raise UploadRejected(str(exc)) from None
        body = batch_request_of_fields(form.fields)
        check_urls(body.urls, settings, ("body", "urls"))
        files = [await _judged(runtime, upload) for upload in form.files]
        return await _create(runtime, request.tenant, body, files, request.correlation_id)


def batch_request_of_fields(fields: dict[str, str]) -> BatchRequest:
    """The form's fields as a BatchRequest: `urls` a JSON list or one URL a line, `labels` a
    JSON object, the job options as plain fields. An empty field means its default."""
    given = {k: v for k, v in fields.items() if v != ""}
    options = {k: v for k, v in given.items() if k in JobOptions.model_fields}
    raw: dict[str, object] = {"options": options}
    for key in ("name", "labels"):
        if key in given:
            raw[key] = given[key]
    if "urls" in given:
        raw["urls"] = _url_list(given["urls"])
    try:
        return BatchRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequest(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _url_list(text: str) -> object:
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except ValueError:
            return text  # BatchRequest refuses it with its own sentence
    return [line.strip() for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class _JudgedFile:
    upload: ReceivedUpload
    format: str


async def _judged(runtime: IngestRuntime, upload: ReceivedUpload) -> _JudgedFile:
    """The file's format by its bytes; the whole batch is refused for one it cannot read."""
    name = sanitize_filename(upload.client_filename) or "a file"
    if upload.size_bytes == 0:
        raise UploadRejected(f"The file {name} is empty.")
    fmt = await sniff_blob(runtime.blobs, upload.uri, upload.client_filename)
    if fmt is None:
        reason = await unsupported_upload_reason(runtime.blobs, upload.uri)
        raise UnsupportedFormat(f"{name}: {reason}")
    return _JudgedFile(upload, fmt)


def _jobs_of(
    tenant: str,
    batch_id: uuid.UUID,
    options: JobOptions,
    files: Sequence[_JudgedFile],
    urls: Sequence[str],
    password_token: str | None = None,
) -> list[store.BatchJob]:
    """One job per file, then per URL; every job carries the batch's sealed password."""

    def event(
        uri: str, filename: str | None, size: int | None, ctype: str | None
    ) -> DocumentUploaded:
        return DocumentUploaded(
            job_id=uuid.uuid4(),
            tenant=tenant,
            document_uri=uri,
            filename=filename,
            ocr=options.ocr,
            ocr_lang=options.ocr_lang,
            docx_comments=options.docx_comments,
            pdf_tables=options.pdf_tables,
            password_token=password_token,
            priority=options.priority,
            size_bytes=size,
            content_type=ctype,
            batch_id=batch_id,
        )

    jobs = [
        store.BatchJob(
            event(
                f.upload.uri,
                sanitize_filename(f.upload.client_filename) or f"upload.{f.format}",
                f.upload.size_bytes,
                MEDIA_TYPES[f.format],
            ),
            f.upload.sha256,
            f.format,
        )
        for f in files
    ]
    jobs += [
        store.BatchJob(event(url, filename_of_url(url), None, None), None, None) for url in urls
    ]
    return jobs


async def _create(
    runtime: IngestRuntime,
    tenant: str,
    body: BatchRequest,
    files: Sequence[_JudgedFile],
    correlation_id: str,
) -> SubmittedBatch:
    if not files and not body.urls:
        raise EmptyBatch()
    batch_id = uuid.uuid4()
    options = checked_ocr_lang(body.options, runtime.settings, ("body", "options"))
    limits = TenantLimits.from_settings(runtime.settings)
    check_priority(limits, tenant, options.priority, ("body", "options", "priority"))
    password_token = seal_password(runtime.settings, options.password)
    jobs = _jobs_of(tenant, batch_id, options, files, body.urls, password_token)
    shown_options = options.model_dump(mode="json", exclude={"password"})
    batch = store.NewBatch(batch_id, tenant, body.name, body.labels, shown_options)
    async with runtime.pool.acquire() as conn:
        outbox_ids = await store.create_batch(
            conn, batch, jobs, {"x-correlation-id": correlation_id}, limits
        )
    # All at once, as a single upload's event: published a hundred at a time, a batch's jobs
    # start sooner than the relay (one publish after another) would start them.
    await publish_many(runtime.pool, runtime.bus, outbox_ids)
    log.info("batch accepted", batch_id=str(batch_id), jobs=len(jobs))
    return SubmittedBatch(batch_id, body.name, body.labels, jobs)


async def cancel_batch(
    runtime: IngestRuntime, batch_id: uuid.UUID, tenant: str | None, correlation_id: str = ""
) -> int:
    """Cancel every unfinished job of the batch; returns how many this call cancelled (0 when
    all had ended or were already being cancelled: cancelling is idempotent)."""
    async with runtime.pool.acquire() as conn:
        outcome = await store.request_batch_cancel(
            conn, batch_id, tenant, {"x-correlation-id": correlation_id}
        )
    if not outcome.found:
        raise BatchNotFound()
    await publish_many(runtime.pool, runtime.bus, list(outcome.outbox_ids))
    log.info("batch cancel requested", batch_id=str(batch_id), jobs=outcome.cancelled_jobs)
    return outcome.cancelled_jobs
