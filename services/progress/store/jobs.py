"""Job rows, their counters, and the stall/deadline candidates."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from services.progress.arithmetic import STAGES, Counts, Snapshot, StageCount
from services.progress.store.base import ACTIVE, Conn, Deltas
from services.progress.transitions import (
    JobState,
)

# --- jobs ---------------------------------------------------------------------------------

_LOCK_JOBS = "SELECT * FROM jobs WHERE job_id = ANY($1::uuid[]) ORDER BY job_id FOR UPDATE"


async def lock_jobs(
    conn: asyncpg.Connection, job_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    """Lock the job rows (ordered by id, so two windows cannot deadlock); missing ones are
    left out."""
    rows = await conn.fetch(_LOCK_JOBS, sorted(set(job_ids)))
    return {r["job_id"]: r for r in rows}


async def read_job(conn: Conn, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)


async def job_tenant(conn: Conn, job_id: uuid.UUID) -> str | None:
    tenant: str | None = await conn.fetchval("SELECT tenant FROM jobs WHERE job_id = $1", job_id)
    return tenant


SAVE_JOB = """
UPDATE jobs SET
    status = $2, stage = $3, percent = $4, format = $5, pages_total = $6, started_at = $7,
    finished_at = $8, error = $9, partial = $10, stalled = $11, seq = $12,
    updated_at = $13,
    tokens = $14, cost_usd = $15, document_summary = $16::jsonb,
    summary_requested_at = CASE WHEN $17 THEN coalesce(summary_requested_at, $13)
                                ELSE summary_requested_at END,
    document_metadata = $18::jsonb,
    first_progress_at = CASE WHEN $2 <> 'queued' THEN coalesce(first_progress_at, $13)
                             ELSE first_progress_at END
WHERE job_id = $1
"""

INSERT_UPDATE = "INSERT INTO job_updates (job_id, seq, payload, created_at) VALUES ($1, $2, $3, $4)"


def save_args(job_id: uuid.UUID, state: JobState, seq: int, now: datetime) -> tuple[Any, ...]:
    return (
        job_id,
        state.status.value,
        state.stage.value,
        state.percent,
        state.format,
        state.pages_total,
        state.started_at,
        state.finished_at,
        state.error,
        state.partial,
        state.stalled,
        seq,
        now,
        state.tokens,
        state.cost_usd,
        json.dumps(state.document_summary) if state.document_summary is not None else None,
        state.summary_requested,
        json.dumps(state.document_metadata) if state.document_metadata is not None else None,
    )


async def save_jobs(
    conn: asyncpg.Connection,
    saves: Sequence[tuple[Any, ...]],
    updates: Sequence[Snapshot],
    now: datetime,
) -> None:
    """Write job rows (SAVE_JOB arguments) and record updates, one executemany each."""
    if saves:
        await conn.executemany(SAVE_JOB, saves)
    if updates:
        await conn.executemany(
            INSERT_UPDATE, [(uuid.UUID(u["job_id"]), u["seq"], u, now) for u in updates]
        )


async def set_revived(conn: asyncpg.Connection, job_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("UPDATE jobs SET revived_at = $2 WHERE job_id = $1", job_id, at)


async def undo_revive(conn: asyncpg.Connection, before: asyncpg.Record, at: datetime) -> None:
    """Put a revived job back as it was, only if nothing has moved it since the revive."""
    await conn.execute(
        "UPDATE jobs SET status = $2, stage = $3, error = $4, finished_at = $5, "
        "revived_at = $6, stalled = $7 "
        "WHERE job_id = $1 AND status = 'processing' AND revived_at = $8 AND updated_at = $8",
        before["job_id"],
        before["status"],
        before["stage"],
        before["error"],
        before["finished_at"],
        before["revived_at"],
        before["stalled"],
        at,
    )


# --- counters -----------------------------------------------------------------------------

_ADD_COUNTS = """
INSERT INTO job_progress (job_id, stage, total, done, failed)
SELECT s.job_id, s.stage, s.total, s.done, s.failed
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::int[])
     AS s(job_id, stage, total, done, failed)
ON CONFLICT (job_id, stage) DO UPDATE SET
    total = job_progress.total + EXCLUDED.total,
    done = job_progress.done + EXCLUDED.done,
    failed = job_progress.failed + EXCLUDED.failed,
    updated_at = now()
RETURNING job_id, stage, total, done, failed
"""

_READ_COUNTS = """
SELECT job_id, stage, total, done, failed FROM job_progress WHERE job_id = ANY($1::uuid[])
"""


def _grouped_counts(
    job_ids: Iterable[uuid.UUID], rows: Iterable[asyncpg.Record]
) -> dict[uuid.UUID, Counts]:
    grouped: dict[uuid.UUID, dict[str, StageCount]] = {j: {} for j in job_ids}
    for r in rows:
        grouped.setdefault(r["job_id"], {})[r["stage"]] = StageCount(
            r["total"], r["done"], r["failed"]
        )
    return {j: Counts.from_mapping(stages) for j, stages in grouped.items()}


async def read_counts_many(conn: Conn, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, Counts]:
    return _grouped_counts(job_ids, await conn.fetch(_READ_COUNTS, job_ids))


async def read_counts(conn: Conn, job_id: uuid.UUID) -> Counts:
    return (await read_counts_many(conn, [job_id]))[job_id]


async def move_counts(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID], deltas: Deltas
) -> dict[uuid.UUID, Counts]:
    """The counters of every job after moving them by `deltas`: moved set-based where they
    moved, read set-based where not (job_ids sorted: rows are locked in a stable order)."""
    moved = [j for j in job_ids if j in deltas and deltas[j].nonzero]
    still = [j for j in job_ids if j not in deltas or not deltas[j].nonzero]
    rows: list[asyncpg.Record] = []
    if moved:
        columns: tuple[list[Any], ...] = ([], [], [], [], [])
        for j in moved:
            for stage in STAGES:
                part = deltas[j].of(stage)
                for column, value in zip(columns, (j, stage.value, *part), strict=True):
                    column.append(value)
        rows += await conn.fetch(_ADD_COUNTS, *columns)
    if still:
        rows += await conn.fetch(_READ_COUNTS, still)
    return _grouped_counts(job_ids, rows)


# Every counter of each job, recomputed from the item rows, and stored.
_RECOUNT = """
WITH j AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS j(job_id, pages_total)
), p AS (
    SELECT
        job_id,
        count(*) FILTER (WHERE extracted_at IS NOT NULL) AS ex_done,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND error IS NOT NULL) AS ex_failed,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending) AS ocr_total,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending
                         AND ocred_at IS NOT NULL) AS ocr_done,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending
                         AND ocred_at IS NOT NULL AND ocr_error IS NOT NULL) AS ocr_failed,
        coalesce(sum(text_chunks) FILTER (WHERE extracted_at IS NOT NULL), 0)
          + coalesce(sum(ocr_chunks) FILTER (WHERE ocred_at IS NOT NULL), 0) AS an_total
    FROM job_pages WHERE job_id = ANY($1::uuid[]) GROUP BY job_id
), c AS (
    SELECT job_id, count(*) AS an_done FROM job_chunks
    WHERE job_id = ANY($1::uuid[]) GROUP BY job_id
), x AS (
    SELECT j.job_id, j.pages_total,
           coalesce(p.ex_done, 0) AS ex_done, coalesce(p.ex_failed, 0) AS ex_failed,
           coalesce(p.ocr_total, 0) AS ocr_total, coalesce(p.ocr_done, 0) AS ocr_done,
           coalesce(p.ocr_failed, 0) AS ocr_failed, coalesce(p.an_total, 0) AS an_total,
           coalesce(c.an_done, 0) AS an_done
    FROM j LEFT JOIN p USING (job_id) LEFT JOIN c USING (job_id)
)
INSERT INTO job_progress (job_id, stage, total, done, failed)
SELECT job_id, 'extract', pages_total, ex_done, ex_failed FROM x
UNION ALL SELECT job_id, 'ocr', ocr_total, ocr_done, ocr_failed FROM x
UNION ALL SELECT job_id, 'analyze', an_total, an_done, 0 FROM x
ON CONFLICT (job_id, stage) DO UPDATE SET
    total = EXCLUDED.total, done = EXCLUDED.done, failed = EXCLUDED.failed, updated_at = now()
RETURNING job_id, stage, total, done, failed
"""


async def recount_many(
    conn: asyncpg.Connection, jobs: list[tuple[uuid.UUID, int | None]]
) -> dict[uuid.UUID, Counts]:
    """Recompute and store every counter of each (job_id, pages_total), in one statement."""
    rows = await conn.fetch(
        _RECOUNT, [j for j, _ in jobs], [pages_total or 0 for _, pages_total in jobs]
    )
    return _grouped_counts([j for j, _ in jobs], rows)


async def chunk_count(conn: asyncpg.Connection, job_id: uuid.UUID) -> int:
    n: int = await conn.fetchval("SELECT count(*) FROM job_chunks WHERE job_id = $1", job_id)
    return n


# --- stalls and deadlines -----------------------------------------------------------------

_STALL_CONDITION = """status = ANY($1::text[])
  AND ((status = 'processing' AND NOT stalled AND updated_at < $2)
       OR coalesce(revived_at, created_at) < $3)"""


async def stall_candidates(
    conn: Conn, stall_before: datetime, deadline_before: datetime, limit: int
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        f"SELECT job_id FROM jobs WHERE {_STALL_CONDITION} ORDER BY updated_at LIMIT $4",
        ACTIVE,
        stall_before,
        deadline_before,
        limit,
    )
    return [r["job_id"] for r in rows]


async def lock_stall_candidate(
    conn: asyncpg.Connection, job_id: uuid.UUID, stall_before: datetime, deadline_before: datetime
) -> asyncpg.Record | None:
    """The job row, locked, if it is still a candidate and no event holds it."""
    return await conn.fetchrow(
        f"SELECT * FROM jobs WHERE job_id = $4 AND {_STALL_CONDITION} FOR UPDATE SKIP LOCKED",
        ACTIVE,
        stall_before,
        deadline_before,
        job_id,
    )
