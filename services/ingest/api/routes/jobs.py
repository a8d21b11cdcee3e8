"""/v1/jobs: submit, inspect, list, fetch results of and cancel document jobs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse

from services.ingest import repository as repo
from services.ingest.api.deps import (
    CancelDep,
    PoolDep,
    ReadDep,
    RequestIdDep,
    RuntimeDep,
    SubmitDep,
    visible_tenant,
)
from services.ingest.api.routes.common import (
    UPLOAD_PROBLEMS,
    LabelQuery,
    cursor_after,
    hand_read_body,
    job_page,
    label_filters,
    upload_of,
)
from services.ingest.cancel import request_cancel
from services.ingest.errors import JobNotFound
from services.ingest.exports import MEDIA_TYPES as EXPORT_MEDIA_TYPES
from services.ingest.exports import ExportFormat, render
from services.ingest.json_body import is_json, json_body
from services.ingest.models import (
    CancelAccepted,
    JobCreated,
    JobLinks,
    JobPage,
    JobView,
    Problem,
    UploadForm,
    UrlJobRequest,
)
from services.ingest.submit import SubmittedJob, submit
from services.ingest.url_submit import submit_url
from shared import audit
from shared.events import JobStatus
from shared.settings import Settings

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

# The form is streamed by hand (not parsed by FastAPI); a document by address is the JSON body
# (services/ingest/url_submit.py).
_UPLOAD_OPENAPI = hand_read_body(
    {"multipart/form-data": UploadForm, "application/json": UrlJobRequest}
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


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobCreated,
    openapi_extra=_UPLOAD_OPENAPI,
    responses={
        200: {"model": JobCreated, "description": "Idempotency-Key seen before: that job"},
        **UPLOAD_PROBLEMS,
        413: {"model": Problem},
        415: {"model": Problem},
        429: {
            "model": Problem,
            "description": (
                "Too many uploads of this tenant at once, or the tenant already has its limit "
                "of jobs queued and in progress"
            ),
            "headers": {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        },
    },
)
async def submit_job(
    request: Request,
    response: Response,
    principal: SubmitDep,
    runtime: RuntimeDep,
    request_id: RequestIdDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JobCreated:
    """Upload a document (multipart form), or name one by URL (JSON body `{"url": ...}`: the
    extractor downloads it); it is processed asynchronously (202, then follow the links).
    An Idempotency-Key sent again with the same file (URL) and options answers 200 with that
    job; with a different file or options, 422. A tenant has a limit of jobs in flight: later
    jobs wait, `queued`, and start in fair turns with other tenants' as its jobs end; past a
    second limit (queued and in flight) the answer is 429 with Retry-After. A priority above
    the tenant's ceiling is 422."""
    if is_json(request.headers.get("content-type")):
        body = await json_body(request, UrlJobRequest)
        job = await submit_url(
            runtime, principal.tenant, body, idempotency_key, correlation_id=request_id
        )
        if not job.created:
            response.status_code = status.HTTP_200_OK
        return _created(request, runtime.settings, job)
    upload = upload_of(request, principal.tenant, request_id, idempotency_key)
    job = await submit(runtime, upload)
    if not job.created:
        response.status_code = status.HTTP_200_OK
    return _created(request, runtime.settings, job)


def _created(request: Request, settings: Settings, job: SubmittedJob) -> JobCreated:
    return JobCreated(
        job_id=job.job_id,
        status=job.status,
        filename=job.filename,
        format=job.format,
        size_bytes=job.size_bytes,
        sha256=job.sha256,
        links=_links(request, settings, job.job_id),
        deduplicated_from=job.deduplicated_from,
    )


@router.get("", response_model=JobPage, responses={400: {"model": Problem}})
async def list_jobs(
    principal: ReadDep,
    pool: PoolDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    label: LabelQuery = None,
) -> JobPage:
    """The caller's jobs, newest first; pass next_cursor back as ?cursor= for the next page."""
    after = cursor_after(cursor)
    labels = label_filters(label)
    rows = await repo.list_jobs(
        pool,
        visible_tenant(principal),
        status=status_,
        limit=limit,
        after=after,
        labels=labels,
    )
    return job_page(rows, limit)


@router.get("/{job_id}", response_model=JobView, responses={404: {"model": Problem}})
async def get_job(job_id: uuid.UUID, principal: ReadDep, pool: PoolDep) -> JobView:
    row = await repo.get_job(pool, job_id, visible_tenant(principal))
    if row is None:
        raise JobNotFound()
    return JobView.from_row(row)


@router.get(
    "/{job_id}/result",
    responses={
        200: {
            "description": "The assembled result (see the progress service): JSON, or as "
            "Markdown or plain text (?format=)",
            "content": {
                "application/json": {},
                "text/markdown": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}},
            },
        },
        404: {"model": Problem},
        409: {"description": "The job has not completed"},
    },
)
async def get_result(
    job_id: uuid.UUID,
    principal: ReadDep,
    pool: PoolDep,
    format_: Annotated[
        ExportFormat,
        Query(
            alias="format",
            description="json (default); markdown: title, metadata, pages marked "
            "`<!-- page N -->`, headings, lists and tables kept; text: plain text, pages "
            "separated by a form feed",
        ),
    ] = ExportFormat.JSON,
) -> Any:
    """The result of a completed job; a cancelled job's partial result carries partial=true."""
    row = await repo.get_job(pool, job_id, visible_tenant(principal))
    if row is None:
        raise JobNotFound()
    job_status = JobStatus(row["status"])
    ended = job_status in (JobStatus.COMPLETED, JobStatus.CANCELLED)
    if ended and await repo.has_result(pool, job_id):
        partial = job_status is JobStatus.CANCELLED
        if format_ is ExportFormat.JSON:  # streamed as stored, never decoded here
            return StreamingResponse(
                repo.result_pieces(pool, job_id, partial=partial), media_type="application/json"
            )
        # An export is rendered from the decoded result: it costs this process the result's
        # size (a JSON result of tens of MB stays streamed; see docs/decisions/0990).
        result = await repo.get_result(pool, job_id)
        if result is not None:
            if partial and isinstance(result, dict):
                result = {**result, "partial": True}
            return Response(render(result, format_), media_type=EXPORT_MEDIA_TYPES[format_])
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
        200: {"model": CancelAccepted, "description": "Already cancelled, or being cancelled"},
        404: {"model": Problem},
        409: {"model": Problem},
    },
)
async def cancel_job(
    job_id: uuid.UUID,
    response: Response,
    principal: CancelDep,
    runtime: RuntimeDep,
    request_id: RequestIdDep,
) -> CancelAccepted:
    """Stop a queued or running job: 202, and the job turns cancelled moments later.
    Idempotent: cancelling a job already cancelled (or being cancelled) answers 200."""
    requested = await request_cancel(runtime, job_id, visible_tenant(principal), request_id)
    if principal.admin:
        await audit.record_job_action(
            runtime.pool, principal.key_id, audit.Action.JOB_CANCEL_AS_ADMIN, job_id, requested
        )
    if not requested:
        response.status_code = status.HTTP_200_OK
    return CancelAccepted(job_id=job_id, status=JobStatus.CANCELLED)
