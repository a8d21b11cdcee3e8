"""SQL of retention (services/progress/retention.py): the image blobs each job references,
expired jobs, and the trims of outbox, job_updates and deleted_jobs. Every statement takes a
bounded batch (LIMIT, SKIP LOCKED), so no sweep holds a hot table's rows for long."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.blobstore import SCHEME
from shared.events import ImagesExtracted

_RECORD_IMAGES = """
INSERT INTO job_blobs (job_id, blob_uri, page, kind)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[])
ON CONFLICT DO NOTHING
"""


async def record_image_blobs(conn: asyncpg.Connection, events: Sequence[ImagesExtracted]) -> None:
    """The images the extractor stored for these jobs' pages are referenced by the jobs."""
    columns: tuple[list[object], ...] = ([], [], [], [])
    for ev in events:
        for image in ev.images:
            if image.uri.startswith(SCHEME):
                for column, value in zip(
                    columns, (ev.job_id, image.uri, ev.page, image.kind), strict=True
                ):
                    column.append(value)
    if columns[0]:
        await conn.execute(_RECORD_IMAGES, *columns)


_EXPIRED = """
SELECT job_id FROM jobs
WHERE finished_at < $1 AND status IN ('completed', 'failed', 'cancelled')
ORDER BY finished_at
LIMIT $2
FOR UPDATE SKIP LOCKED
"""


async def lock_expired_jobs(
    conn: asyncpg.Connection, before: datetime, limit: int
) -> list[uuid.UUID]:
    """Finished jobs that ended before `before`, oldest first; rows a writer holds are skipped."""
    return [r["job_id"] for r in await conn.fetch(_EXPIRED, before, limit)]


async def delete_empty_batches(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Batches that finished before `before` and have no job left."""
    deleted: list[asyncpg.Record] = await conn.fetch(
        """
        DELETE FROM batches WHERE batch_id IN (
            SELECT b.batch_id FROM batches b
            WHERE b.finished_at < $1
              AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.batch_id = b.batch_id)
            LIMIT $2 FOR UPDATE SKIP LOCKED)
        RETURNING batch_id
        """,
        before,
        limit,
    )
    return len(deleted)


# Images whose OCR is recorded (or whose job has ended) since before $1, of jobs that did not
# ask to keep them.
_RELEASE_IMAGES = """
DELETE FROM job_blobs WHERE (job_id, blob_uri) IN (
    SELECT b.job_id, b.blob_uri
    FROM job_blobs b
    JOIN jobs j ON j.job_id = b.job_id
    LEFT JOIN job_pages p ON p.job_id = b.job_id AND p.page = b.page
    WHERE NOT j.keep_images
      AND (p.ocred_at < $1 OR j.finished_at < $1)
    LIMIT $2
    FOR UPDATE OF b SKIP LOCKED)
RETURNING blob_uri
"""


async def release_ocred_images(conn: asyncpg.Connection, before: datetime, limit: int) -> list[str]:
    """Drop the references of images no longer needed; returns their URIs (their files go
    once no other job references them)."""
    rows = await conn.fetch(_RELEASE_IMAGES, before, limit)
    return sorted({r["blob_uri"] for r in rows})


async def trim_outbox(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Outbox rows published before `before` (the relay never reads them again)."""
    status: str = await conn.execute(
        """
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox WHERE published_at < $1 ORDER BY published_at LIMIT $2
            FOR UPDATE SKIP LOCKED)
        """,
        before,
        limit,
    )
    return int(status.split()[-1])


async def trim_job_updates(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    """Of jobs finished before `before`, delete every update but the last (the final one a
    reconnecting client still gets). Returns the number of jobs trimmed."""
    jobs = await conn.fetch(
        """
        SELECT job_id, seq FROM jobs
        WHERE finished_at < $1 AND NOT updates_trimmed
        ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED
        """,
        before,
        limit,
    )
    if not jobs:
        return 0
    ids = [r["job_id"] for r in jobs]
    await conn.execute(
        """
        DELETE FROM job_updates u USING unnest($1::uuid[], $2::bigint[]) AS k(job_id, seq)
        WHERE u.job_id = k.job_id AND u.seq < k.seq
        """,
        ids,
        [r["seq"] for r in jobs],
    )
    await conn.execute("UPDATE jobs SET updates_trimmed = true WHERE job_id = ANY($1::uuid[])", ids)
    return len(ids)


async def trim_deleted_jobs(conn: asyncpg.Connection, before: datetime, limit: int) -> int:
    status: str = await conn.execute(
        "DELETE FROM deleted_jobs WHERE job_id IN "
        "(SELECT job_id FROM deleted_jobs WHERE deleted_at < $1 LIMIT $2)",
        before,
        limit,
    )
    return int(status.split()[-1])
