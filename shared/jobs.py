"""Job-row access that several services need."""

from __future__ import annotations

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


async def require_active(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> None:
    """Raise JobGone when the job was cancelled or has already ended, so workers skip it."""
    status = await job_status(conn, job_id)
    if status in TERMINAL_STATUSES:
        raise JobGone(f"job is {status}")
