"""Submitting a document by URL (POST /v1/jobs with a JSON body): the URL is checked (scheme,
length, port), the job and its DocumentUploaded recorded in one transaction; the extractor
downloads it (services/extractor/fetch.py), and a failed download fails the job with a
sentence."""

from __future__ import annotations

import uuid

import asyncpg
import structlog

from services.ingest import repository as repo
from services.ingest.admission import check_priority, check_room
from services.ingest.errors import InvalidDocumentUrl, NoTenant
from services.ingest.fair_share import TenantLimits
from services.ingest.models import UrlJobRequest
from services.ingest.ocr_lang import checked_ocr_lang
from services.ingest.outbox import publish_now
from services.ingest.runtime import IngestRuntime
from services.ingest.submit import SubmittedJob
from services.ingest.urls import filename_of_url, url_problem
from shared.events import DocumentUploaded, JobStatus
from shared.secret_box import seal_password

log = structlog.get_logger(__name__)


async def submit_url(
    runtime: IngestRuntime,
    tenant: str | None,
    body: UrlJobRequest,
    idempotency_key: str | None = None,
    correlation_id: str = "",
) -> SubmittedJob:
    if tenant is None:
        raise NoTenant()
    settings = runtime.settings
    problem = url_problem(body.url, settings.fetch_allowed_ports, settings.allow_private_urls)
    if problem is not None:
        raise InvalidDocumentUrl(("body", "url"), problem)
    body = checked_ocr_lang(body, settings, ("body",))
    limits = TenantLimits.from_settings(settings)
    check_priority(limits, tenant, body.priority, ("body", "priority"))
    if idempotency_key:
        existing = await _existing(runtime, tenant, idempotency_key, body)
        if existing is not None:
            return existing
    await check_room(runtime.pool, limits, tenant, settings.admission_retry_after_seconds)
    event = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=body.url,
        filename=filename_of_url(body.url),
        ocr=body.ocr,
        ocr_lang=body.ocr_lang,
        docx_comments=body.docx_comments,
        pdf_tables=body.pdf_tables,
        password_token=seal_password(settings, body.password),
        priority=body.priority,
    )
    job = repo.NewJob(event, None, None, idempotency_key, body.labels)
    try:
        async with runtime.pool.acquire() as conn:
            outbox_id = await repo.create_job(
                conn, job, {"x-correlation-id": correlation_id}, limits
            )
    except asyncpg.UniqueViolationError:
        existing = await _existing(runtime, tenant, idempotency_key or "", body)
        if existing is None:
            raise
        return existing
    if outbox_id is not None:
        await publish_now(runtime.pool, runtime.bus, outbox_id)
    log.info("url job accepted", job_id=str(event.job_id))
    return SubmittedJob(
        job_id=event.job_id,
        status=JobStatus.QUEUED,
        filename=event.filename,
        format=None,
        size_bytes=None,
        sha256=None,
        created=True,
    )


async def _existing(
    runtime: IngestRuntime, tenant: str, key: str, body: UrlJobRequest
) -> SubmittedJob | None:
    """The job a reused Idempotency-Key names, if it was the same URL with the same options."""
    row = await runtime.pool.fetchrow(
        f"SELECT {repo.JOB_COLUMNS}, document_uri FROM jobs "
        "WHERE tenant = $1 AND idempotency_key = $2",
        tenant,
        key,
    )
    if row is None:
        return None
    return SubmittedJob.replayed(row, "document_uri", body.url, body)
