"""SQL of the batch API: a batch and its jobs inserted set-based with one outbox row per job,
in one transaction; the batch cancel; the batch lists; the result stream's cursor.
`tenant=None` means an admin: every tenant's batches are visible. Ingest writes a batch's
request columns only; the aggregate columns are the progress service's."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.ingest.admission import admit, forget_held
from services.ingest.fair_share import TenantLimits
from shared.events import TERMINAL_STATUSES, DocumentUploaded, Event, JobCancelled

BATCH_COLUMNS = (
    "batch_id, tenant, name, labels, options, created_at, cancel_requested_at, status, "
    "jobs_total, jobs_queued, jobs_running, jobs_completed, jobs_failed, jobs_cancelled, "
    "pages_done, pages_total, percent, eta_seconds, cost_usd, updated_at, finished_at"
)
BATCH_CANCEL_REASON = "The batch was cancelled by the client."
CANCEL_PRIORITY = 9  # a cancel should overtake queued work


@dataclass(frozen=True)
class NewBatch:
    batch_id: uuid.UUID
    tenant: str
    name: str | None
    labels: dict[str, str]
    options: dict[str, Any]  # as shown back (never the password)


@dataclass(frozen=True)
class BatchJob:
    """One job of a new batch: its upload event and what ingest knows of its document."""

    event: DocumentUploaded
    sha256: str | None
    format: str | None


async def enqueue_many(
    conn: asyncpg.Connection, events: Sequence[Event], priorities: Sequence[int], headers: Any
) -> list[int]:
    """services.ingest.outbox.enqueue for many events in one statement (same rules: a
    message_id already there is skipped); returns the new rows' ids."""
    rows = await conn.fetch(
        """
        INSERT INTO outbox (message_id, routing_key, payload, headers, priority)
        SELECT m, r, p, $4::jsonb, pr
        FROM unnest($1::text[], $2::text[], $3::jsonb[], $5::smallint[]) AS t(m, r, p, pr)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING id
        """,
        [e.message_id() for e in events],
        [e.routing_key for e in events],
        [e.model_dump(mode="json") for e in events],
        headers,
        list(priorities),
    )
    return [row["id"] for row in rows]


async def create_batch(
    conn: asyncpg.Connection,
    batch: NewBatch,
    jobs: Sequence[BatchJob],
    headers: Any,
    limits: TenantLimits,
) -> list[int]:
    """The batch row, its jobs (created_at a microsecond apart, so lists keep the submitted
    order), the blob owners and one DocumentUploaded outbox row per job, in one transaction;
    the jobs beyond the tenant's in-flight limit are held (services/ingest/admission.py).
    Returns the outbox ids."""
    events = [j.event for j in jobs]
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO batches (batch_id, tenant, name, labels, options) "
            "VALUES ($1, $2, $3, $4, $5)",
            batch.batch_id,
            batch.tenant,
            batch.name,
            batch.labels,
            batch.options,
        )
        await conn.execute(
            """
            INSERT INTO jobs (job_id, tenant, filename, document_uri, sha256, size_bytes,
                              content_type, format, ocr_mode, priority, labels, batch_id,
                              created_at, ocr_lang, docx_comments, pdf_tables)
            SELECT j, $2, f, u, s, sz, ct, fmt, $9, $10, $11, $12,
                   now() + ord * interval '1 microsecond', $13, $14, $15
            FROM unnest($1::uuid[], $3::text[], $4::text[], $5::text[], $6::bigint[],
                        $7::text[], $8::text[])
                 WITH ORDINALITY AS t(j, f, u, s, sz, ct, fmt, ord)
            """,
            [e.job_id for e in events],
            batch.tenant,
            [e.filename for e in events],
            [e.document_uri for e in events],
            [j.sha256 for j in jobs],
            [e.size_bytes for e in events],
            [e.content_type for e in events],
            [j.format for j in jobs],
            events[0].ocr.value,
            events[0].priority,
            batch.labels,
            batch.batch_id,
            events[0].ocr_lang,
            events[0].docx_comments,
            events[0].pdf_tables,
        )
        await conn.execute(
            "INSERT INTO blob_owners (blob_uri, tenant) SELECT DISTINCT u, $2 "
            "FROM unnest($1::text[]) AS t(u) ON CONFLICT DO NOTHING",
            [e.document_uri for e in events if e.document_uri.startswith("blob://")],
            batch.tenant,
        )
        outbox_ids = await enqueue_many(conn, events, [e.priority for e in events], headers)
        await admit(conn, limits, batch.tenant, outbox_ids)
        return outbox_ids


@dataclass(frozen=True)
class BatchCancelOutcome:
    found: bool
    cancelled_jobs: int = 0
    outbox_ids: tuple[int, ...] = ()


async def request_batch_cancel(
    conn: asyncpg.Connection, batch_id: uuid.UUID, tenant: str | None, headers: Any
) -> BatchCancelOutcome:
    """Record the cancel on the batch and on each of its jobs that has not ended (nor been
    asked to), with one JobCancelled per such job, in one transaction. The statuses are the
    progress service's to change, when it applies job.cancelled."""
    async with conn.transaction():
        found = await conn.fetchval(
            "UPDATE batches SET cancel_requested_at = coalesce(cancel_requested_at, now()) "
            "WHERE batch_id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING true",
            batch_id,
            tenant,
        )
        if not found:
            return BatchCancelOutcome(found=False)
        job_ids = await conn.fetch(
            """
            UPDATE jobs SET cancel_requested_at = now()
            WHERE batch_id = $1 AND cancel_requested_at IS NULL
              AND NOT (status = ANY($2::text[]))
            RETURNING job_id
            """,
            batch_id,
            [s.value for s in TERMINAL_STATUSES],
        )
        await forget_held(conn, [r["job_id"] for r in job_ids])
        events = [JobCancelled(job_id=r["job_id"], reason=BATCH_CANCEL_REASON) for r in job_ids]
        ids = await enqueue_many(conn, events, [CANCEL_PRIORITY] * len(events), headers)
    return BatchCancelOutcome(found=True, cancelled_jobs=len(events), outbox_ids=tuple(ids))


async def get_batch(
    conn: asyncpg.Connection | asyncpg.Pool, batch_id: uuid.UUID, tenant: str | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {BATCH_COLUMNS} FROM batches "
        "WHERE batch_id = $1 AND ($2::text IS NULL OR tenant = $2)",
        batch_id,
        tenant,
    )


async def list_batches(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant: str | None,
    *,
    limit: int,
    after: tuple[datetime, uuid.UUID] | None,
) -> list[asyncpg.Record]:
    """Newest first, keyset-paginated like the job list (limit + 1 rows)."""
    after_at, after_id = after if after else (None, None)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT {BATCH_COLUMNS} FROM batches
        WHERE ($1::text IS NULL OR tenant = $1)
          AND ($2::timestamptz IS NULL OR (created_at, batch_id) < ($2, $3::uuid))
        ORDER BY created_at DESC, batch_id DESC
        LIMIT $4
        """,
        tenant,
        after_at,
        after_id,
        limit + 1,
    )
    return rows


RESULT_ROWS_PER_PAGE = 100
# A result may be megabytes of text: fewer of them are held at once.
INLINE_RESULTS_PER_PAGE = 5


async def batch_result_lines(
    pool: asyncpg.Pool, batch_id: uuid.UUID, inline: bool
) -> AsyncIterator[bytes]:
    """One JSON line per job of the batch, in submitted order, read a page at a time (keyset
    on created_at, job_id). Each page takes a connection and gives it back before its lines
    are sent, so a slow reader holds no connection and a batch of any size streams in
    bounded memory."""
    result_column = "r.result" if inline else "NULL::jsonb"
    page_size = INLINE_RESULTS_PER_PAGE if inline else RESULT_ROWS_PER_PAGE
    after: tuple[datetime, uuid.UUID] | None = None
    while True:
        after_at, after_id = after if after else (None, None)
        rows = await pool.fetch(
            f"""
            SELECT j.job_id, j.created_at, j.status, j.error, j.filename, j.labels,
                   (r.job_id IS NOT NULL) AS has_result, {result_column} AS result
            FROM jobs j LEFT JOIN job_results r ON r.job_id = j.job_id
            WHERE j.batch_id = $1
              AND ($2::timestamptz IS NULL OR (j.created_at, j.job_id) > ($2, $3::uuid))
            ORDER BY j.created_at, j.job_id
            LIMIT $4
            """,
            batch_id,
            after_at,
            after_id,
            page_size,
        )
        for row in rows:
            yield (json.dumps(result_line(row, inline), ensure_ascii=False) + "\n").encode()
        if len(rows) < page_size:
            return
        after = (rows[-1]["created_at"], rows[-1]["job_id"])


def result_line(row: Any, inline: bool) -> dict[str, Any]:
    line: dict[str, Any] = {
        "job_id": str(row["job_id"]),
        "status": row["status"],
        "error": row["error"],
        "filename": row["filename"],
        "labels": row["labels"],
    }
    if row["has_result"]:
        if inline:
            line["result"] = row["result"]
        else:
            line["result_url"] = f"/v1/jobs/{row['job_id']}/result"
    return line
