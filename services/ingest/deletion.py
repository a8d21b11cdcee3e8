"""Deleting a job (or a batch and all its jobs), as the GDPR requires: every row of the job in
every table, its dead letters and outbox rows, and the blobs no remaining job references
(shared.purge). The job then answers 404 everywhere, for every tenant.

A running job is deleted at once: its rows go in one transaction that leaves a tombstone, and
a job.cancelled broadcast then makes every service kill its running work for it. Messages of
the job still on the bus are dropped on the tombstone (ensure_job, require_active, progress's
window), so nothing of the job is ever re-created. Duplicates that were waiting for a deleted
job (services/ingest/dedup.py) fail with a sentence saying so.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import asyncpg
import structlog

from services.ingest.errors import JobNotFound
from services.ingest.outbox import enqueue, publish_now
from services.ingest.runtime import IngestRuntime
from shared.events import ACTIVE_STATUSES, JobCancelled, JobFailed
from shared.purge import delete_unreferenced_blobs, purge_jobs

log = structlog.get_logger(__name__)

DELETED_REASON = "The job was deleted."


class BatchNotFound(JobNotFound):
    def __init__(self) -> None:
        super().__init__()
        self.detail = "No such batch."


def follower_reason(source_id: uuid.UUID) -> str:
    return f"The identical document processed by job {source_id} was deleted; submit it again."


@dataclass
class Erased:
    """What a deletion committed, and what is left to do after commit."""

    job_ids: list[uuid.UUID]
    active: list[uuid.UUID]  # were queued or running: their work is to be killed
    blob_uris: list[str]  # referenced by the deleted jobs: deleted unless still referenced
    outbox_ids: list[int]  # the failures of the duplicates that waited for them


async def _erase(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> Erased:
    ids = [r["job_id"] for r in rows]
    active = [r["job_id"] for r in rows if r["status"] in ACTIVE_STATUSES]
    followers = await conn.fetch(
        "SELECT job_id, deduplicated_from FROM jobs WHERE deduplicated_from = ANY($1::uuid[]) "
        "AND status IN ('queued', 'processing') AND NOT job_id = ANY($1::uuid[])",
        ids,
    )
    uris = await purge_jobs(conn, ids)
    outbox_ids = []
    for follower in followers:
        failure = JobFailed(
            job_id=follower["job_id"],
            stage="dedup",
            reason=follower_reason(follower["deduplicated_from"]),
        )
        outbox_id = await enqueue(conn, failure)
        if outbox_id is not None:
            outbox_ids.append(outbox_id)
    return Erased(ids, active, uris, outbox_ids)


async def _after_commit(runtime: IngestRuntime, erased: Erased) -> None:
    try:
        await asyncio.gather(
            *(
                runtime.bus.publish(JobCancelled(job_id=j, reason=DELETED_REASON))
                for j in erased.active
            )
        )
    except Exception:  # its messages are dropped on the tombstone all the same
        log.exception("could not broadcast the cancel of deleted jobs")
    for outbox_id in erased.outbox_ids:
        await publish_now(runtime.pool, runtime.bus, outbox_id)
    deleted = await delete_unreferenced_blobs(runtime.pool, runtime.blobs, erased.blob_uris)
    log.info(
        "jobs deleted",
        jobs=len(erased.job_ids),
        cancelled=len(erased.active),
        blobs_deleted=len(deleted),
    )


async def delete_job(runtime: IngestRuntime, job_id: uuid.UUID, tenant: str | None) -> None:
    """Erase one job of `tenant` (None: an admin, any tenant's). Raises JobNotFound."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT job_id, status FROM jobs "
            "WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
            job_id,
            tenant,
        )
        if row is None:
            raise JobNotFound()
        erased = await _erase(conn, [row])
    await _after_commit(runtime, erased)


async def delete_batch(runtime: IngestRuntime, batch_id: uuid.UUID, tenant: str | None) -> None:
    """Erase a batch of `tenant` and every job in it. Raises BatchNotFound. The jobs are locked
    before the batch row, in the order a progress window locks them."""
    async with runtime.pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "SELECT true FROM batches WHERE batch_id = $1 AND ($2::text IS NULL OR tenant = $2)",
            batch_id,
            tenant,
        )
        if not found:
            raise BatchNotFound()
        rows = await conn.fetch(
            "SELECT job_id, status FROM jobs WHERE batch_id = $1 ORDER BY job_id FOR UPDATE",
            batch_id,
        )
        erased = await _erase(conn, list(rows))
        await conn.execute("DELETE FROM batches WHERE batch_id = $1", batch_id)
    await _after_commit(runtime, erased)
