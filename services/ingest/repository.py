"""SQL of the job API. `tenant=None` means an admin: every tenant's jobs are visible."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from services.ingest.admission import admit, forget_held
from services.ingest.fair_share import TenantLimits
from services.ingest.outbox import enqueue
from shared.events import DocumentUploaded, JobCancelled, JobStatus
from shared.jobs import record_blob_owner

JOB_COLUMNS = (
    "job_id, tenant, status, stage, percent, error, filename, format, ocr_mode, priority, "
    "size_bytes, sha256, pages_total, stalled, partial, created_at, updated_at, finished_at, "
    "cancel_requested_at, labels, batch_id, deduplicated_from, tokens, cost_usd, ocr_lang, "
    "docx_comments, pdf_tables"
)
CANCEL_REASON = "Cancelled by the client."


@dataclass(frozen=True)
class NewJob:
    event: DocumentUploaded
    sha256: str | None
    format: str | None
    idempotency_key: str | None
    labels: dict[str, str] = field(default_factory=dict)
    callback_url: str | None = None
    # Duplicates and retention (services/ingest/dedup.py): None leaves the job out of reuse.
    dedup_key: str | None = None
    keep_images: bool = False


async def find_by_idempotency_key(
    conn: asyncpg.Connection | asyncpg.Pool, tenant: str, key: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND idempotency_key = $2", tenant, key
    )


async def create_job(
    conn: asyncpg.Connection, job: NewJob, headers: dict[str, Any], limits: TenantLimits
) -> int | None:
    """Insert the job row and its DocumentUploaded outbox row (held if the tenant is at its
    in-flight limit) in one transaction; returns the outbox id. Raises
    asyncpg.UniqueViolationError when the idempotency key is taken."""
    ev = job.event
    async with conn.transaction():
        await insert_job(conn, job)
        if ev.document_uri.startswith("blob://"):
            await record_blob_owner(conn, ev.tenant, ev.document_uri)
        priority = limits.bus_priority(ev.priority, ev.size_bytes)
        outbox_id = await enqueue(conn, ev, priority=priority, headers=headers)
        await admit(conn, limits, ev.tenant, [outbox_id] if outbox_id is not None else [])
        return outbox_id


async def insert_job(
    conn: asyncpg.Connection, job: NewJob, *, deduplicated_from: uuid.UUID | None = None
) -> None:
    """The job row alone (the caller's transaction adds its event)."""
    ev = job.event
    await conn.execute(
        """
        INSERT INTO jobs (job_id, tenant, filename, document_uri, sha256, size_bytes,
                          content_type, format, ocr_mode, priority, idempotency_key,
                          dedup_key, keep_images, deduplicated_from, labels, callback_url,
                          analysis, ocr_lang, docx_comments, pdf_tables)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                $17::jsonb, $18, $19, $20)
        """,
        ev.job_id,
        ev.tenant,
        ev.filename,
        ev.document_uri,
        job.sha256,
        ev.size_bytes,
        ev.content_type,
        job.format,
        ev.ocr.value,
        ev.priority,
        job.idempotency_key,
        job.dedup_key,
        job.keep_images,
        deduplicated_from,
        job.labels,
        job.callback_url,
        json.dumps(ev.analysis.stored()) if ev.analysis is not None else None,
        ev.ocr_lang,
        ev.docx_comments,
        ev.pdf_tables,
    )


async def get_job(
    conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID, tenant: str | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2)",
        job_id,
        tenant,
    )


async def list_jobs(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str | None,
    *,
    status: JobStatus | None,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
    labels: dict[str, str] | None = None,
    batch_id: uuid.UUID | None = None,
) -> list[asyncpg.Record]:
    """Newest first; `after` is the (created_at, job_id) of the last row already seen.
    Fetches limit + 1 rows so the caller knows whether there is a next page. `labels`: only
    jobs whose labels contain these; `batch_id`: only that batch's jobs."""
    after_at, after_id = after if after else (None, None)
    params: list[Any] = [tenant, status.value if status else None, after_at, after_id, limit + 1]
    # Added only when asked, so the planner sees a plain containment (GIN index) and a plain
    # equality (batch index) rather than an "IS NULL OR" it cannot index.
    extra = ""
    if labels:
        params.append(labels)
        extra += f" AND labels @> ${len(params)}::jsonb"
    if batch_id is not None:
        params.append(batch_id)
        extra += f" AND batch_id = ${len(params)}::uuid"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE ($1::text IS NULL OR tenant = $1)
          AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR (created_at, job_id) < ($3, $4::uuid)){extra}
        ORDER BY created_at DESC, job_id DESC
        LIMIT $5
        """,
        *params,
    )
    return rows


# A stored result as UTF-8 bytes, converted once (MATERIALIZED) and cut into pieces of $3
# bytes (bytea offsets are bytes, so each piece costs the same whatever its position);
# `partial` ($2) sets partial=true.
_RESULT_PIECES = """
WITH r AS MATERIALIZED (
    SELECT convert_to(
        (CASE WHEN $2 THEN result || '{"partial": true}' ELSE result END)::text, 'UTF8') AS b
    FROM job_results WHERE job_id = $1
)
SELECT substring(r.b FROM i FOR $3) AS piece
FROM r, generate_series(1, length(r.b), $3) AS i
ORDER BY i
"""
RESULT_PIECE_BYTES = 1024 * 1024


async def get_result(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> Any:
    """The stored result, decoded (for the Markdown and text exports; JSON is streamed)."""
    return await conn.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)


async def has_result(conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM job_results WHERE job_id = $1)", job_id
    )
    return found


async def result_pieces(
    pool: asyncpg.Pool, job_id: uuid.UUID, *, partial: bool = False
) -> AsyncIterator[bytes]:
    """The stored result's JSON, as PostgreSQL writes it, in pieces of RESULT_PIECE_BYTES read
    through a cursor: never decoded into objects nor held whole here. A long document's result
    is tens of MB; decoded, one took ingest past 300 MB (docs/decisions/0990)."""
    async with pool.acquire() as conn, conn.transaction():
        async for row in conn.cursor(
            _RESULT_PIECES, job_id, partial, RESULT_PIECE_BYTES, prefetch=2
        ):
            yield bytes(row["piece"])


@dataclass(frozen=True)
class CancelOutcome:
    found: bool
    status: JobStatus | None = None  # the status when the request came
    already_requested: bool = False  # an earlier cancel is on its way
    outbox_id: int | None = None


async def request_cancel(
    conn: asyncpg.Connection, job_id: uuid.UUID, tenant: str | None, headers: dict[str, Any]
) -> CancelOutcome:
    """Record a cancel request for a job that has not ended, with its JobCancelled event, in
    one transaction. The status is not touched: the progress service applies job.cancelled."""
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT status, cancel_requested_at FROM jobs "
            "WHERE job_id = $1 AND ($2::text IS NULL OR tenant = $2) FOR UPDATE",
            job_id,
            tenant,
        )
        if row is None:
            return CancelOutcome(found=False)
        status = JobStatus(row["status"])
        if status.terminal or row["cancel_requested_at"] is not None:
            return CancelOutcome(
                found=True,
                status=status,
                already_requested=row["cancel_requested_at"] is not None,
            )
        await conn.execute("UPDATE jobs SET cancel_requested_at = now() WHERE job_id = $1", job_id)
        await forget_held(conn, [job_id])
        outbox_id = await enqueue(
            conn,
            JobCancelled(job_id=job_id, reason=CANCEL_REASON),
            priority=9,  # a cancel should overtake queued work
            headers=headers,
        )
        return CancelOutcome(found=True, status=status, outbox_id=outbox_id)
