"""Job-row access that several services need."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import asyncpg
import structlog

from shared.errors import JobGone
from shared.events import TERMINAL_STATUSES, DocumentUploaded

log = structlog.get_logger(__name__)

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool


class ForeignJobMessage(JobGone):
    """A bus message claims a job that exists for another tenant or document: it is
    recorded, and dropped (a JobGone), so nothing of it reaches the job."""


FOREIGN_JOB_REASON = "the job exists with another tenant or document"


async def ensure_job(conn: Db, event: DocumentUploaded) -> None:
    """Create the job row for an upload published straight onto the bus.

    When the job already exists, the message is accepted only as a redelivery of that job's
    own upload (same tenant, same document); otherwise it is recorded in refused_messages and
    ForeignJobMessage is raised. Inside a transaction that the caller then rolls back, the
    record goes with it; the extractor calls this outside one, so a refusal is kept once."""
    inserted = await conn.fetchval(
        """
        INSERT INTO jobs (job_id, tenant, filename, document_uri, size_bytes, content_type,
                          ocr_mode, priority, created_at, batch_id, analysis, ocr_lang)
        SELECT $1::uuid, $2::text, $3::text, $4::text, $5::bigint, $6::text, $7::text,
               $8::smallint, $9::timestamptz,
               -- only a batch of the job's own tenant
               (SELECT batch_id FROM batches WHERE batch_id = $10 AND tenant = $2::text),
               $11::jsonb, $12::text
        WHERE NOT EXISTS (SELECT 1 FROM deleted_jobs WHERE job_id = $1)
        ON CONFLICT (job_id) DO NOTHING
        RETURNING true
        """,
        event.job_id,
        event.tenant,
        event.filename,
        event.document_uri,
        event.size_bytes,
        event.content_type,
        event.ocr.value,
        event.priority,
        event.occurred_at,
        event.batch_id,
        json.dumps(event.analysis.stored()) if event.analysis is not None else None,
        event.ocr_lang,
    )
    if inserted:
        return
    owner = await conn.fetchrow(
        "SELECT tenant, document_uri FROM jobs WHERE job_id = $1", event.job_id
    )
    if owner is None:
        raise JobGone("the job was deleted")  # shared.purge left its tombstone
    if (owner["tenant"], owner["document_uri"]) == (
        event.tenant,
        event.document_uri,
    ):
        return  # the same upload again
    await record_refused(conn, event, FOREIGN_JOB_REASON)
    raise ForeignJobMessage(f"refused: {FOREIGN_JOB_REASON}")


async def record_refused(conn: Db, event: DocumentUploaded, reason: str) -> None:
    """Log and store a refused bus message (its claims only, never its password token)."""
    log.warning(
        "bus message refused",
        job_id=str(event.job_id),
        claimed_tenant=event.tenant,
        routing_key=event.routing_key,
        reason=reason,
    )
    await conn.execute(
        """
        INSERT INTO refused_messages (job_id, routing_key, claimed_tenant,
                                      claimed_document_uri, reason)
        VALUES ($1, $2, $3, $4, $5)
        """,
        event.job_id,
        event.routing_key,
        event.tenant,
        event.document_uri,
        reason,
    )


def refusal_recorder(pool: Db) -> Callable[[DocumentUploaded, str], Awaitable[None]]:
    """record_refused bound to a pool: what the bus calls for an upload whose publisher may
    not name its tenant (shared.bus.middleware.CheckPublisher)."""

    async def record(event: DocumentUploaded, reason: str) -> None:
        await record_refused(pool, event, reason)

    return record


async def record_blob_owner(conn: Db, tenant: str, uri: str) -> None:
    """`tenant` uploaded the blob `uri`: a bus upload of that tenant may name it."""
    await conn.execute(
        "INSERT INTO blob_owners (blob_uri, tenant) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        uri,
        tenant,
    )


async def owns_blob(conn: Db, tenant: str, uri: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM blob_owners WHERE blob_uri = $1 AND tenant = $2)",
            uri,
            tenant,
        )
    )


def blob_owner_check(pool: Db) -> Callable[[str, str], Awaitable[bool]]:
    """owns_blob bound to a pool: what services.extractor.fetch.resolve_document asks."""

    async def check(tenant: str, uri: str) -> bool:
        return await owns_blob(pool, tenant, uri)

    return check


async def job_status(conn: Db, job_id: uuid.UUID) -> str | None:
    status: str | None = await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id)
    return status


async def is_deleted(conn: Db, job_id: uuid.UUID) -> bool:
    """The job was deleted (shared.purge): its late messages are dropped."""
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM deleted_jobs WHERE job_id = $1)", job_id)
    )


# require_active runs once per message (every chunk, every page), so an "active" answer is
# kept for ACTIVE_TTL_SECONDS per process. A job.cancelled broadcast forgets the job at once
# (shared.service calls forget_job), so the next message of a cancelled job asks the database
# again and is dropped; a job that ended otherwise is noticed within the TTL.
ACTIVE_TTL_SECONDS = 1.0
_CACHE_MAX = 10_000
_active_until: dict[uuid.UUID, float] = {}
_forgotten_at: dict[uuid.UUID, float] = {}


def forget_job(job_id: uuid.UUID) -> None:
    """Drop the cached answer for the job (and any answer to a query already in flight)."""
    _active_until.pop(job_id, None)
    if len(_forgotten_at) >= _CACHE_MAX:
        _forgotten_at.clear()
    _forgotten_at[job_id] = time.monotonic()


def clear_job_cache() -> None:
    _active_until.clear()
    _forgotten_at.clear()


async def require_active(conn: Db, job_id: uuid.UUID) -> None:
    """Raise JobGone when the job was cancelled or has already ended, so workers skip it."""
    asked = time.monotonic()
    until = _active_until.get(job_id)
    if until is not None and asked < until:
        return
    status = await job_status(conn, job_id)
    if status is None and await is_deleted(conn, job_id):
        raise JobGone("job was deleted")
    if status in TERMINAL_STATUSES:
        _active_until.pop(job_id, None)
        raise JobGone(f"job is {status}")
    if _forgotten_at.get(job_id, -1.0) >= asked:
        return  # a cancel arrived while the query was in flight: do not cache this answer
    if len(_active_until) >= _CACHE_MAX:
        _active_until.clear()
    _active_until[job_id] = asked + ACTIVE_TTL_SECONDS
