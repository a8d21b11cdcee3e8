"""Job-row access that several services need."""

from __future__ import annotations

import time
import uuid

import asyncpg

from shared.errors import JobGone
from shared.events import DocumentUploaded

TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})


async def ensure_job(conn: asyncpg.Connection | asyncpg.Pool, event: DocumentUploaded) -> None:
    """Create the job row for an upload published straight onto the bus (no-op if it exists)."""
    await conn.execute(
        """
        INSERT INTO jobs (job_id, tenant, filename, document_uri, size_bytes, content_type,
                          ocr_mode, priority, created_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (job_id) DO NOTHING
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
    )


async def job_status(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> str | None:
    return await conn.fetchval("SELECT status FROM jobs WHERE job_id = $1", job_id)


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


async def require_active(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> None:
    """Raise JobGone when the job was cancelled or has already ended, so workers skip it."""
    asked = time.monotonic()
    until = _active_until.get(job_id)
    if until is not None and asked < until:
        return
    status = await job_status(conn, job_id)
    if status in TERMINAL_STATUSES:
        _active_until.pop(job_id, None)
        raise JobGone(f"job is {status}")
    if _forgotten_at.get(job_id, -1.0) >= asked:
        return  # a cancel arrived while the query was in flight: do not cache this answer
    if len(_active_until) >= _CACHE_MAX:
        _active_until.clear()
    _active_until[job_id] = asked + ACTIVE_TTL_SECONDS
