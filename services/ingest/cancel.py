"""Cancelling a job: ingest records the request and publishes job.cancelled (outbox, one
transaction); the progress service turns it into status cancelled, and every service kills the
job's running work on the broadcast."""

from __future__ import annotations

import uuid

from services.ingest import repository as repo
from services.ingest.errors import JobAlreadyEnded, JobNotFound
from services.ingest.outbox import publish_now
from services.ingest.runtime import IngestRuntime
from shared.events import JobStatus


async def request_cancel(
    runtime: IngestRuntime, job_id: uuid.UUID, tenant: str | None, correlation_id: str = ""
) -> bool:
    """True when this call requested the cancel; False when the job is already cancelled or
    a cancel is already on its way (cancelling is idempotent). `tenant=None`: an admin."""
    async with runtime.pool.acquire() as conn:
        outcome = await repo.request_cancel(
            conn, job_id, tenant, {"x-correlation-id": correlation_id}
        )
    if not outcome.found:
        raise JobNotFound()
    if outcome.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        raise JobAlreadyEnded(outcome.status)
    if outcome.status is JobStatus.CANCELLED or outcome.already_requested:
        return False
    if outcome.outbox_id is not None:
        await publish_now(runtime.pool, runtime.bus, outcome.outbox_id)
    return True
