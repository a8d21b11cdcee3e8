"""/v1/batches: submit several documents as one batch (files and/or URLs), list a tenant's
batches and a batch's jobs, stream a batch's results, cancel a batch. A batch's status, its
aggregate and its WebSocket are the progress service's (GET /v1/batches/{id} there)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse

from services.ingest import batch_store as store
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
from services.ingest.batch_models import (
    BatchCancelAccepted,
    BatchCreated,
    BatchJobCreated,
    BatchLinks,
    BatchPage,
    BatchRequest,
    BatchUploadForm,
    BatchView,
)
from services.ingest.batches import (
    SubmittedBatch,
    cancel_batch,
    submit_batch_form,
    submit_batch_json,
)
from services.ingest.errors import BatchNotFound
from services.ingest.json_body import is_json, json_body
from services.ingest.models import JobPage, Problem
from services.ingest.pagination import encode_cursor
from shared import audit
from shared.events import JobStatus
from shared.settings import Settings

router = APIRouter(prefix="/v1/batches", tags=["batches"])

# Both bodies are read by hand (chosen by Content-Type).
_SUBMIT_OPENAPI = hand_read_body(
    {"application/json": BatchRequest, "multipart/form-data": BatchUploadForm}
)


def _links(request: Request, settings: Settings, batch_id: uuid.UUID) -> BatchLinks:
    host = request.url.hostname or settings.host
    progress = f"{host}:{settings.progress_port}/v1/batches/{batch_id}"
    return BatchLinks(
        status=f"http://{progress}",
        events=f"ws://{progress}/events",
        jobs=f"/v1/batches/{batch_id}/jobs",
        result=f"/v1/batches/{batch_id}/result",
        cancel=f"/v1/batches/{batch_id}/cancel",
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchCreated,
    openapi_extra=_SUBMIT_OPENAPI,
    responses={
        **UPLOAD_PROBLEMS,
        413: {"model": Problem, "description": "Too many files or URLs, or a file too large"},
        415: {"model": Problem, "description": "A file is in no format docpipe reads"},
        429: {
            "model": Problem,
            "description": (
                "Too many uploads of this tenant at once, or the tenant already has its limit "
                "of jobs queued and in progress (a batch that starts under it is taken whole)"
            ),
            "headers": {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        },
    },
)
async def submit_batch(
    request: Request, principal: SubmitDep, runtime: RuntimeDep, request_id: RequestIdDep
) -> BatchCreated:
    """Submit several documents as one batch: a JSON body of URLs, or a multipart form of
    `files` parts (plus, optionally, `urls`, `name`, `labels` and the job options). 202 with
    the batch id and every job id, in submitted order. The batch is taken whole or refused
    whole: one bad URL (422) or unreadable file (415) refuses it. Jobs beyond the tenant's
    in-flight limit wait, queued, and start as its earlier jobs end; a priority above the
    tenant's ceiling is refused (422)."""
    if is_json(request.headers.get("content-type")):
        body = await json_body(request, BatchRequest)
        batch = await submit_batch_json(runtime, principal.tenant, body, request_id)
    else:
        batch = await submit_batch_form(runtime, upload_of(request, principal.tenant, request_id))
    return _created(request, runtime.settings, batch)


def _created(request: Request, settings: Settings, batch: SubmittedBatch) -> BatchCreated:
    jobs = [
        BatchJobCreated(
            job_id=job.event.job_id,
            filename=job.event.filename,
            url=None if job.event.document_uri.startswith("blob://") else job.event.document_uri,
        )
        for job in batch.jobs
    ]
    return BatchCreated(
        batch_id=batch.batch_id,
        name=batch.name,
        labels=batch.labels,
        status=JobStatus.QUEUED,
        jobs=jobs,
        links=_links(request, settings, batch.batch_id),
    )


@router.get("", response_model=BatchPage, responses={400: {"model": Problem}})
async def list_batches(
    principal: ReadDep,
    pool: PoolDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> BatchPage:
    """The caller's batches, newest first; pass next_cursor back as ?cursor= for the next page."""
    rows = await store.list_batches(
        pool, visible_tenant(principal), limit=limit, after=cursor_after(cursor)
    )
    items = [BatchView.from_row(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(items[-1].created_at, items[-1].batch_id)
    return BatchPage(items=items, next_cursor=next_cursor)


async def _visible_batch(pool: Any, batch_id: uuid.UUID, principal: Any) -> None:
    if await store.get_batch(pool, batch_id, visible_tenant(principal)) is None:
        raise BatchNotFound()


@router.get(
    "/{batch_id}/jobs",
    response_model=JobPage,
    responses={400: {"model": Problem}, 404: {"model": Problem}},
)
async def list_batch_jobs(
    batch_id: uuid.UUID,
    principal: ReadDep,
    pool: PoolDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    label: LabelQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> JobPage:
    """The batch's jobs, newest first (the last submitted first), paginated like GET /v1/jobs."""
    await _visible_batch(pool, batch_id, principal)
    labels = label_filters(label)
    rows = await repo.list_jobs(
        pool,
        visible_tenant(principal),
        status=status_,
        limit=limit,
        after=cursor_after(cursor),
        labels=labels,
        batch_id=batch_id,
    )
    return job_page(rows, limit)


@router.get(
    "/{batch_id}/result",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "One JSON object a line per job, in submitted order: job_id, "
            "status, error, filename, labels, and result_url (or result, with ?inline=true) "
            "once the job has a result.",
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        },
        404: {"model": Problem},
    },
)
async def batch_result(
    batch_id: uuid.UUID,
    principal: ReadDep,
    pool: PoolDep,
    inline: Annotated[bool, Query(description="Embed each job's result in its line.")] = False,
) -> StreamingResponse:
    """The batch's jobs and their results as NDJSON, streamed (never built in memory)."""
    await _visible_batch(pool, batch_id, principal)
    return StreamingResponse(
        store.batch_result_lines(pool, batch_id, inline), media_type="application/x-ndjson"
    )


@router.post(
    "/{batch_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchCancelAccepted,
    responses={404: {"model": Problem}},
)
async def cancel(
    batch_id: uuid.UUID, principal: CancelDep, runtime: RuntimeDep, request_id: RequestIdDep
) -> BatchCancelAccepted:
    """Cancel every unfinished job of the batch (and kill their running work). Idempotent: a
    batch whose jobs have all ended, or are being cancelled, answers 202 with 0."""
    cancelled = await cancel_batch(runtime, batch_id, visible_tenant(principal), request_id)
    if principal.all_tenants:  # an admin cancelling a tenant's batch: on the audit trail
        await audit.record(
            runtime.pool,
            actor=principal.key_id,
            action=audit.Action.BATCH_CANCEL_AS_ADMIN,
            target=str(batch_id),
            detail={"jobs_cancelled": cancelled},
        )
    return BatchCancelAccepted(batch_id=batch_id, jobs_cancelled=cancelled)
