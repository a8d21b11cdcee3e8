"""DELETE /v1/jobs/{id} and DELETE /v1/batches/{id}: erase a job, or a batch and its jobs,
with everything they own (services/ingest/deletion.py)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response, status

from services.ingest.api.deps import CancelDep, RuntimeDep, visible_tenant
from services.ingest.deletion import delete_batch, delete_job
from services.ingest.models import Problem
from services.ingest.runtime import IngestRuntime
from shared import audit
from shared.auth import Principal

router = APIRouter()

# Both erasures answer 204 with no body, or 404.
_ERASURE: dict[str, Any] = {
    "status_code": status.HTTP_204_NO_CONTENT,
    "response_class": Response,
    "responses": {404: {"model": Problem}},
}


@router.delete(
    "/v1/jobs/{job_id}",
    tags=["jobs"],
    **_ERASURE,
)
async def delete_job_route(job_id: uuid.UUID, principal: CancelDep, runtime: RuntimeDep) -> None:
    """Erase the job and everything it owns: its rows in every table (progress, pages,
    chunks, result, updates, dead letters, outbox, LLM ledger), and the blobs no other job
    references (the upload, rendered page images, embedded images). A running job is
    cancelled. Afterwards the job answers 404 to everyone. Needs the cancel scope."""
    await delete_job(runtime, job_id, visible_tenant(principal))
    await _record(runtime, principal, audit.Action.JOB_DELETE, job_id)


@router.delete(
    "/v1/batches/{batch_id}",
    tags=["batches"],
    **_ERASURE,
)
async def delete_batch_route(
    batch_id: uuid.UUID, principal: CancelDep, runtime: RuntimeDep
) -> None:
    """Erase the batch and every job in it, as DELETE /v1/jobs/{id} does for one job."""
    await delete_batch(runtime, batch_id, visible_tenant(principal))
    await _record(runtime, principal, audit.Action.BATCH_DELETE, batch_id)


async def _record(
    runtime: IngestRuntime, principal: Principal, action: audit.Action, target: uuid.UUID
) -> None:
    """The erasure on the audit trail."""
    await audit.record(
        runtime.pool,
        actor=principal.key_id,
        action=action,
        target=str(target),
        tenant=principal.tenant,
    )
