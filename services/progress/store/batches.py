"""Batches: their aggregate columns and batch_updates (progress alone writes them), and the
reads of the batch routes and the admin page. Ingest writes the batch rows themselves and
jobs.batch_id."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.progress.batches import BatchChange, JobSums, StreamMessage
from services.progress.store.base import Conn

# Locked after the window's job rows (ordered by id, so two windows cannot deadlock), and read
# before the jobs are summed: the sums then see every job change committed before the lock.
# NO KEY UPDATE: a job row inserted meanwhile (its foreign key takes KEY SHARE) is not held up.
_LOCK_BATCHES = """
SELECT batch_id, tenant, created_at, cancel_requested_at, status, jobs_total, jobs_queued,
       jobs_running, jobs_completed, jobs_failed, jobs_cancelled, pages_done, pages_total,
       percent, eta_seconds, cost_usd, seq, updated_at, finished_at
FROM batches WHERE batch_id = ANY($1::uuid[]) ORDER BY batch_id FOR NO KEY UPDATE
"""

# What each batch's jobs add up to, set-based for every batch of the window: the counts and
# pages summed here, and one array per job column (every array_agg of a group takes its rows
# in the same order) from which batches.stage_work_of sums the jobs' expected work (see
# services/progress/batches.py). Pages done: a completed job's pages, else those extracted
# and, if they needed OCR, ocred.
_SUM_JOBS = """
SELECT j.batch_id,
       count(*) AS jobs_total,
       count(*) FILTER (WHERE j.status = 'queued') AS jobs_queued,
       count(*) FILTER (WHERE j.status = 'processing') AS jobs_running,
       count(*) FILTER (WHERE j.status = 'completed') AS jobs_completed,
       count(*) FILTER (WHERE j.status = 'failed') AS jobs_failed,
       count(*) FILTER (WHERE j.status = 'cancelled') AS jobs_cancelled,
       coalesce(sum(j.pages_total), 0) AS pages_total,
       coalesce(sum(CASE WHEN j.status = 'completed' THEN coalesce(j.pages_total, 0)
                         ELSE greatest(0, coalesce(ex.done, 0)
                                          - (coalesce(ocr.total, 0) - coalesce(ocr.done, 0)))
                    END), 0) AS pages_done,
       array_agg(j.format) AS job_format,
       array_agg(j.pages_total) AS job_pages,
       array_agg(j.status IN ('completed', 'failed', 'cancelled')) AS job_ended,
       array_agg(coalesce(ex.total, 0)) AS extract_total,
       array_agg(coalesce(ex.done, 0)) AS extract_done,
       array_agg(coalesce(ocr.total, 0)) AS ocr_total,
       array_agg(coalesce(ocr.done, 0)) AS ocr_done,
       array_agg(coalesce(an.total, 0)) AS analyze_total,
       array_agg(coalesce(an.done, 0)) AS analyze_done,
       {cost} AS cost_usd
FROM jobs j
LEFT JOIN job_progress ex ON ex.job_id = j.job_id AND ex.stage = 'extract'
LEFT JOIN job_progress ocr ON ocr.job_id = j.job_id AND ocr.stage = 'ocr'
LEFT JOIN job_progress an ON an.job_id = j.job_id AND an.stage = 'analyze'
WHERE j.batch_id = ANY($1::uuid[])
GROUP BY j.batch_id
"""

# jobs.cost_usd comes with the AI pipeline's migration: summed where it exists, else 0.
_COST_SUM = "coalesce(sum(j.cost_usd), 0)"
_NO_COST = "0::float8"
_sum_jobs_sql: str | None = None


async def _sum_jobs_query(conn: Conn) -> str:
    global _sum_jobs_sql
    if _sum_jobs_sql is None:
        has_cost = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'jobs'::regclass "
            "AND attname = 'cost_usd' AND NOT attisdropped)"
        )
        _sum_jobs_sql = _SUM_JOBS.format(cost=_COST_SUM if has_cost else _NO_COST)
    return _sum_jobs_sql


async def lock_batches(
    conn: asyncpg.Connection, batch_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(_LOCK_BATCHES, sorted(set(batch_ids)))
    return {r["batch_id"]: r for r in rows}


async def sum_jobs(conn: Conn, batch_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobSums]:
    """Every batch's job sums, in one statement (a batch without jobs: zeros)."""
    rows = await conn.fetch(await _sum_jobs_query(conn), list(batch_ids))
    found = {r["batch_id"]: JobSums.of(r) for r in rows}
    return {b: found.get(b, JobSums()) for b in batch_ids}


_SAVE_BATCH = """
UPDATE batches SET
    status = $2, jobs_total = $3, jobs_queued = $4, jobs_running = $5, jobs_completed = $6,
    jobs_failed = $7, jobs_cancelled = $8, pages_done = $9, pages_total = $10, percent = $11,
    eta_seconds = $12, cost_usd = $13, seq = $14, updated_at = $15, finished_at = $16
WHERE batch_id = $1
"""

_INSERT_BATCH_UPDATE = (
    "INSERT INTO batch_updates (batch_id, seq, snapshot, created_at) VALUES ($1, $2, $3, $4)"
)


async def save_batches(
    conn: asyncpg.Connection, changes: Sequence[BatchChange], now: datetime
) -> None:
    """Write the batches' aggregates and their stream messages, one executemany each."""
    if not changes:
        return
    rows = []
    for c in changes:
        a = c.aggregate
        rows.append(
            (
                c.batch_id,
                a.status.value,
                a.jobs_total,
                a.jobs_queued,
                a.jobs_running,
                a.jobs_completed,
                a.jobs_failed,
                a.jobs_cancelled,
                a.pages_done,
                a.pages_total,
                a.percent,
                a.eta_seconds,
                a.cost_usd,
                c.seq,
                now,
                a.finished_at,
            )
        )
    await conn.executemany(_SAVE_BATCH, rows)
    await conn.executemany(
        _INSERT_BATCH_UPDATE,
        [(c.batch_id, m["seq"], m, now) for c in changes for m in c.messages],
    )


# --- reads ----------------------------------------------------------------------------------


async def read_batch(conn: Conn, batch_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM batches WHERE batch_id = $1", batch_id)


async def batch_tenant(conn: Conn, batch_id: uuid.UUID) -> str | None:
    tenant: str | None = await conn.fetchval(
        "SELECT tenant FROM batches WHERE batch_id = $1", batch_id
    )
    return tenant


async def batch_updates_after(conn: Conn, batch_id: uuid.UUID, after: int) -> list[StreamMessage]:
    rows = await conn.fetch(
        "SELECT snapshot FROM batch_updates WHERE batch_id = $1 AND seq > $2 ORDER BY seq",
        batch_id,
        after,
    )
    return [r["snapshot"] for r in rows]


async def admin_batches(conn: Conn, status_filter: str | None, limit: int) -> list[asyncpg.Record]:
    """Every tenant's batches, newest first (status: a batch status, or 'active')."""
    args: list[Any] = []
    where = ""
    if status_filter == "active":
        where = "WHERE status IN ('queued', 'processing')"
    elif status_filter:
        args.append(status_filter)
        where = "WHERE status = $1"
    args.append(limit)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT * FROM batches {where} ORDER BY created_at DESC, batch_id DESC LIMIT ${len(args)}",
        *args,
    )
    return rows
