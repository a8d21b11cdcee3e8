"""/v1/jobs: submit, inspect, list, fetch results of and cancel document jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from services.ingest import repository as repo
from services.ingest.api.deps import (
    CtxDep,
    PoolDep,
    PrincipalDep,
    RequestIdDep,
    SettingsDep,
    visible_tenant,
)
from services.ingest.filenames import sanitize_filename
from services.ingest.models import (
    CancelAccepted,
    JobCreated,
    JobLinks,
    JobPage,
    JobStatus,
    JobView,
    Problem,
    UploadOptions,
)
from services.ingest.multipart import MultipartError, boundary_of
from services.ingest.outbox import publish_now
from services.ingest.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.ingest.upload import (
    MULTIPART_SLACK_BYTES,
    UploadRejected,
    UploadTooLarge,
    discard_blob,
    human_bytes,
    receive_upload,
    sniff_blob,
    unsupported_upload_reason,
)
from shared.events import DocumentUploaded
from shared.settings import Settings
from shared.sniff import MEDIA_TYPES

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

NOT_FOUND = "No such job."

# The upload is parsed by hand (streamed to the blob store), so describe the form for OpenAPI.
_UPLOAD_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "priority": {"type": "integer", "minimum": 0, "maximum": 9, "default": 0},
                        "ocr": {"type": "string", "enum": ["auto", "always", "never"]},
                        "password": {"type": "string", "description": "for encrypted PDFs"},
                    },
                }
            }
        },
    }
}


def _missing_file() -> RequestValidationError:
    return RequestValidationError(
        [{"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None}]
    )


def _links(request: Request, settings: Settings, job_id: uuid.UUID) -> JobLinks:
    # The progress service listens on the same host the client reached us by.
    host = request.url.hostname or settings.host
    return JobLinks(
        self=f"/v1/jobs/{job_id}",
        result=f"/v1/jobs/{job_id}/result",
        progress=f"http://{host}:{settings.progress_port}/v1/jobs/{job_id}/progress",
        events=f"ws://{host}:{settings.progress_port}/v1/jobs/{job_id}/events",
    )


def _created(request: Request, settings: Settings, row: asyncpg.Record) -> JobCreated:
    return JobCreated(
        job_id=row["job_id"],
        status=row["status"],
        filename=row["filename"],
        format=row["format"],
        size_bytes=row["size_bytes"],
        sha256=row["sha256"],
        links=_links(request, settings, row["job_id"]),
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobCreated,
    openapi_extra=_UPLOAD_OPENAPI,
    responses={
        200: {"model": JobCreated, "description": "Idempotency-Key seen before: that job"},
        400: {"model": Problem},
        413: {"model": Problem},
        415: {"model": Problem},
    },
)
async def submit_job(
    request: Request,
    response: Response,
    principal: PrincipalDep,
    ctx: CtxDep,
    request_id: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobCreated:
    """Upload a document; it is processed asynchronously (202, then follow the links)."""
    settings = ctx.settings
    tenant = principal.tenant
    if tenant is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "This key has no tenant to submit as.")

    if idempotency_key:
        existing = await repo.find_by_idempotency_key(ctx.pool, tenant, idempotency_key)
        if existing is not None:
            response.status_code = status.HTTP_200_OK
            return _created(request, settings, existing)

    content_type = request.headers.get("content-type")
    if boundary_of(content_type) is None:
        raise _missing_file()
    declared = request.headers.get("content-length")
    # Refuse an obviously oversized body before reading any of it.
    if (
        declared
        and declared.isdigit()
        and int(declared) > (settings.max_upload_bytes + MULTIPART_SLACK_BYTES)
    ):
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"The file is larger than the upload limit of "
            f"{human_bytes(settings.max_upload_bytes)}.",
        )

    assert content_type is not None
    try:
        upload = await receive_upload(
            content_type, request.stream(), ctx.blobs, settings.max_upload_bytes
        )
    except UploadTooLarge as exc:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, str(exc)) from None
    except (UploadRejected, MultipartError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    except ClientDisconnect:
        log.info("client went away during upload")
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "The upload was interrupted.") from None
    if upload is None:
        raise _missing_file()

    try:
        options = UploadOptions.model_validate(
            {k: v for k, v in upload.fields.items() if k in UploadOptions.model_fields and v != ""}
        )
    except ValidationError as exc:
        # The blob may be shared with a concurrent valid upload, so it stays.
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None

    if upload.size_bytes == 0:
        await discard_blob(ctx.blobs, upload.uri)
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "The uploaded file is empty.")
    fmt = await sniff_blob(ctx.blobs, upload.uri)
    if fmt is None:
        reason = await unsupported_upload_reason(ctx.blobs, upload.uri)
        await discard_blob(ctx.blobs, upload.uri)
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, reason)

    filename = sanitize_filename(upload.client_filename) or f"upload.{fmt}"
    event = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=upload.uri,
        filename=filename,
        ocr=options.ocr,
        password=options.password,
        priority=options.priority,
        size_bytes=upload.size_bytes,
        content_type=MEDIA_TYPES[fmt],
    )
    job = repo.NewJob(event, upload.sha256, fmt, idempotency_key)
    try:
        async with ctx.pool.acquire() as conn:
            outbox_id = await repo.create_job(conn, job, {"x-correlation-id": request_id})
    except asyncpg.UniqueViolationError:
        # A concurrent request with the same Idempotency-Key won the race.
        existing = await repo.find_by_idempotency_key(ctx.pool, tenant, idempotency_key or "")
        if existing is None:
            raise
        response.status_code = status.HTTP_200_OK
        return _created(request, settings, existing)

    if outbox_id is not None:
        await publish_now(ctx.pool, ctx.bus, outbox_id)
    log.info("job accepted", job_id=str(event.job_id), format=fmt, size=upload.size_bytes)
    return JobCreated(
        job_id=event.job_id,
        status=JobStatus.QUEUED,
        filename=filename,
        format=fmt,
        size_bytes=upload.size_bytes,
        sha256=upload.sha256,
        links=_links(request, settings, event.job_id),
    )


@router.get("", response_model=JobPage, responses={400: {"model": Problem}})
async def list_jobs(
    principal: PrincipalDep,
    pool: PoolDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    """The caller's jobs, newest first; pass next_cursor back as ?cursor= for the next page."""
    try:
        after = decode_cursor(cursor) if cursor else None
    except InvalidCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
    rows = await repo.list_jobs(
        pool,
        visible_tenant(principal),
        status=status_.value if status_ else None,
        limit=limit,
        after=after,
    )
    items = [JobView.from_row(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        next_cursor = encode_cursor(last.created_at, last.job_id)
    return JobPage(items=items, next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobView, responses={404: {"model": Problem}})
async def get_job(job_id: uuid.UUID, principal: PrincipalDep, pool: PoolDep) -> JobView:
    row = await repo.get_job(pool, job_id, visible_tenant(principal))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return JobView.from_row(row)


@router.get(
    "/{job_id}/result",
    responses={
        200: {"description": "The assembled result (see the progress service)"},
        404: {"model": Problem},
        409: {"description": "The job has not completed"},
    },
)
async def get_result(job_id: uuid.UUID, principal: PrincipalDep, pool: PoolDep) -> Any:
    """The result of a completed job; a cancelled job's partial result carries partial=true."""
    row = await repo.get_job(pool, job_id, visible_tenant(principal))
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    job_status = row["status"]
    if job_status in ("completed", "cancelled"):
        result = await repo.get_result(pool, job_id)
        if result is not None:
            if job_status == "cancelled" and isinstance(result, dict):
                result = {**result, "partial": True}
            return JSONResponse(result)
    return JSONResponse(
        {
            "detail": f"The job is {job_status}; the result is available once it has completed.",
            "status": job_status,
        },
        status_code=status.HTTP_409_CONFLICT,
    )


@router.post(
    "/{job_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelAccepted,
    responses={
        200: {"model": CancelAccepted, "description": "Already cancelled"},
        404: {"model": Problem},
        409: {"model": Problem},
    },
)
async def cancel_job(
    job_id: uuid.UUID,
    response: Response,
    principal: PrincipalDep,
    ctx: CtxDep,
    request_id: RequestIdDep,
    settings: SettingsDep,
) -> CancelAccepted:
    """Stop a queued or running job. Idempotent: cancelling a cancelled job answers 200."""
    async with ctx.pool.acquire() as conn:
        outcome = await repo.cancel_job(
            conn, job_id, visible_tenant(principal), {"x-correlation-id": request_id}
        )
    if not outcome.found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    if outcome.status == "cancelled":
        response.status_code = status.HTTP_200_OK
    elif outcome.status in ("completed", "failed"):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"The job has already {outcome.status}; only a queued or running job can be cancelled.",
        )
    elif outcome.outbox_id is not None:
        await publish_now(ctx.pool, ctx.bus, outcome.outbox_id)
    return CancelAccepted(job_id=job_id, status=JobStatus.CANCELLED)
