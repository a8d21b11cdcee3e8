"""SQL of duplicate jobs (services/progress/deduplicated.py): the source a duplicate reuses,
the copy of its counters and result, and the followers waiting for a source."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.progress.store.base import Conn


async def read_source(conn: Conn, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT job_id, status, error, format, pages_total FROM jobs WHERE job_id = $1", job_id
    )


_COPY_COUNTS = """
INSERT INTO job_progress (job_id, stage, total, done, failed)
SELECT $1::uuid, stage, total, done, failed FROM job_progress WHERE job_id = $2::uuid
ON CONFLICT (job_id, stage) DO NOTHING
"""

# The source's result under the duplicate's own id, name and times; it cost nothing.
_COPY_RESULT = """
INSERT INTO job_results (job_id, result)
SELECT $1::uuid, result || jsonb_build_object(
    'job_id', $1::uuid::text,
    'filename', $3::text,
    'deduplicated_from', $2::uuid::text,
    'cost', jsonb_build_object('total_usd', 0),
    'timings', jsonb_build_object(
        'created_at', to_jsonb($4::timestamptz), 'started_at', to_jsonb($5::timestamptz),
        'finished_at', to_jsonb($5::timestamptz), 'queued_seconds',
        round(extract(epoch FROM $5::timestamptz - $4::timestamptz)::numeric, 3),
        'processing_seconds', 0, 'ocr_seconds', 0))
FROM job_results WHERE job_id = $2::uuid
ON CONFLICT (job_id) DO NOTHING
RETURNING coalesce(jsonb_array_length(result->'chunks'), 0)
"""


async def copy_completion(
    conn: asyncpg.Connection,
    job: asyncpg.Record,
    source_id: uuid.UUID,
    finished_at: datetime,
) -> int | None:
    """Copy the source's counters and result onto the job; returns the result's chunk count
    (None: the source has no result to copy)."""
    chunks: int | None = await conn.fetchval(
        _COPY_RESULT, job["job_id"], source_id, job["filename"], job["created_at"], finished_at
    )
    if chunks is None:
        return None
    await conn.execute(_COPY_COUNTS, job["job_id"], source_id)
    return chunks


async def lock_waiting_followers(
    conn: asyncpg.Connection, source_ids: Sequence[uuid.UUID]
) -> list[asyncpg.Record]:
    """The queued duplicates waiting for these sources, locked in id order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM jobs WHERE deduplicated_from = ANY($1::uuid[]) AND status = 'queued' "
        "ORDER BY job_id FOR UPDATE",
        list(source_ids),
    )
    return rows
