"""All of progress's SQL: jobs, job_progress, job_pages, job_chunks, job_results and
job_updates. Writes are set-based (unnest arrays, executemany): one statement per kind of
row whatever the number of jobs or events in a window. Item writes are first-write-wins and
return only the rows they wrote, so a duplicate moves no counter."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from services.progress.arithmetic import STAGES, Counts, Snapshot, StageCount
from services.progress.transitions import (
    CHUNK_ANALYZED,
    JobState,
    page_extracted_delta,
    page_ocred_delta,
)
from shared.events import ACTIVE_STATUSES, AnalyzedChunk, ChunksAnalyzed, PageExtracted, PageOcred

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
Deltas = dict[uuid.UUID, Counts]
ACTIVE = sorted(ACTIVE_STATUSES)


def clean(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def _add(deltas: Deltas, job_id: uuid.UUID, delta: Counts) -> None:
    deltas[job_id] = deltas.get(job_id, Counts()).plus(delta)


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


# --- updates ------------------------------------------------------------------------------


async def latest_update(conn: Conn, job_id: uuid.UUID) -> Snapshot | None:
    payload: Snapshot | None = await conn.fetchval(
        "SELECT payload FROM job_updates WHERE job_id = $1 ORDER BY seq DESC LIMIT 1", job_id
    )
    return payload


async def updates_after(conn: Conn, job_id: uuid.UUID, after: int) -> list[Snapshot]:
    rows = await conn.fetch(
        "SELECT payload FROM job_updates WHERE job_id = $1 AND seq > $2 ORDER BY seq",
        job_id,
        after,
    )
    return [r["payload"] for r in rows]


async def last_pushed_statuses(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The status of each job's latest recorded update (jobs without one are left out)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (job_id) job_id, payload->>'status' AS status FROM job_updates "
        "WHERE job_id = ANY($1::uuid[]) ORDER BY job_id, seq DESC",
        job_ids,
    )
    return {r["job_id"]: r["status"] for r in rows}


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


# --- items: each write returns the counter deltas of the rows it wrote first -------------

_PAGES_EXTRACTED = """
INSERT INTO job_pages AS p (job_id, page, extracted_at, has_text_layer, text, text_chunks,
                            ocr_pending, error)
SELECT s.job_id, s.page, s.at, s.htl, s.text, s.chunks, s.pending, s.error
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::bool[], $5::text[], $6::int[],
            $7::bool[], $8::text[]) AS s(job_id, page, at, htl, text, chunks, pending, error)
ON CONFLICT (job_id, page) DO UPDATE SET
    extracted_at = EXCLUDED.extracted_at, has_text_layer = EXCLUDED.has_text_layer,
    text = EXCLUDED.text, text_chunks = EXCLUDED.text_chunks,
    ocr_pending = EXCLUDED.ocr_pending, error = EXCLUDED.error
WHERE p.extracted_at IS NULL
RETURNING p.job_id, p.page, p.ocred_at IS NOT NULL AS ocred, p.ocr_error IS NOT NULL AS ocr_failed
"""

_PAGES_OCRED = """
INSERT INTO job_pages AS p (job_id, page, ocred_at, ocr_text, ocr_chunks, ocr_seconds, ocr_error)
SELECT s.job_id, s.page, s.at, s.text, s.chunks, s.secs, s.error
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::int[], $6::real[],
            $7::text[]) AS s(job_id, page, at, text, chunks, secs, error)
ON CONFLICT (job_id, page) DO UPDATE SET
    ocred_at = EXCLUDED.ocred_at, ocr_text = EXCLUDED.ocr_text,
    ocr_chunks = EXCLUDED.ocr_chunks, ocr_seconds = EXCLUDED.ocr_seconds,
    ocr_error = EXCLUDED.ocr_error
WHERE p.ocred_at IS NULL
RETURNING p.job_id, p.page,
          p.extracted_at IS NOT NULL AND coalesce(p.ocr_pending, false) AS awaited
"""

_CHUNKS_ANALYZED = """
INSERT INTO job_chunks (chunk_id, job_id, page, source, idx, start_offset, end_offset, text,
                        analysis, cost_usd, analyzed_at)
SELECT s.chunk_id, s.job_id, s.page, s.source, s.idx, s.start_offset, s.end_offset, s.text,
       s.analysis::jsonb, s.cost_usd, s.at
FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::text[], $5::int[], $6::int[], $7::int[],
            $8::text[], $9::text[], $10::float8[], $11::timestamptz[])
     AS s(chunk_id, job_id, page, source, idx, start_offset, end_offset, text, analysis,
          cost_usd, at)
ON CONFLICT DO NOTHING
RETURNING job_id
"""


async def write_pages_extracted(
    conn: asyncpg.Connection, events: list[PageExtracted], deltas: Deltas
) -> None:
    by_key: dict[tuple[uuid.UUID, int], PageExtracted] = {}
    for ev in events:
        by_key.setdefault((ev.job_id, ev.page), ev)  # a duplicate in the window changes nothing
    evs = [by_key[k] for k in sorted(by_key)]
    rows = await conn.fetch(
        _PAGES_EXTRACTED,
        [e.job_id for e in evs],
        [e.page for e in evs],
        [e.occurred_at for e in evs],
        [e.has_text_layer for e in evs],
        [clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_pending for e in evs],
        [clean(e.error) for e in evs],
    )
    for row in rows:  # only the pages written first here
        ev = by_key[(row["job_id"], row["page"])]
        delta = page_extracted_delta(ev, ocred=row["ocred"], ocr_failed=row["ocr_failed"])
        _add(deltas, ev.job_id, delta)


async def write_pages_ocred(
    conn: asyncpg.Connection, events: list[PageOcred], deltas: Deltas
) -> None:
    by_key: dict[tuple[uuid.UUID, int], PageOcred] = {}
    for ev in events:
        by_key.setdefault((ev.job_id, ev.page), ev)
    evs = [by_key[k] for k in sorted(by_key)]
    rows = await conn.fetch(
        _PAGES_OCRED,
        [e.job_id for e in evs],
        [e.page for e in evs],
        [e.occurred_at for e in evs],
        [clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_seconds for e in evs],
        [clean(e.error) for e in evs],
    )
    for row in rows:
        ev = by_key[(row["job_id"], row["page"])]
        _add(deltas, ev.job_id, page_ocred_delta(ev, awaited=row["awaited"]))


async def write_chunks_analyzed(
    conn: asyncpg.Connection, events: list[ChunksAnalyzed], deltas: Deltas
) -> None:
    """Each chunk counts once, whichever message brought it first."""
    by_id: dict[uuid.UUID, tuple[ChunksAnalyzed, AnalyzedChunk]] = {}
    for ev in events:
        for item in ev.items:
            by_id.setdefault(item.chunk.chunk_id, (ev, item))
    rows_in = [by_id[k] for k in sorted(by_id)]
    rows = await conn.fetch(
        _CHUNKS_ANALYZED,
        [i.chunk.chunk_id for _, i in rows_in],
        [e.job_id for e, _ in rows_in],
        [i.chunk.page for _, i in rows_in],
        [i.chunk.source.value for _, i in rows_in],
        [i.chunk.index for _, i in rows_in],
        [i.chunk.start for _, i in rows_in],
        [i.chunk.end for _, i in rows_in],
        [clean(i.chunk.text) for _, i in rows_in],
        [json.dumps(clean(i.analysis.model_dump(mode="json"))) for _, i in rows_in],
        [i.analysis.cost_usd for _, i in rows_in],
        [e.occurred_at for e, _ in rows_in],
    )
    for row in rows:
        _add(deltas, row["job_id"], CHUNK_ANALYZED)


# --- results ------------------------------------------------------------------------------


async def read_items(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID]
) -> tuple[dict[uuid.UUID, list[asyncpg.Record]], dict[uuid.UUID, list[asyncpg.Record]]]:
    """Every page and chunk row of the jobs, grouped by job (two statements)."""
    pages: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in job_ids}
    chunks: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in job_ids}
    for r in await conn.fetch("SELECT * FROM job_pages WHERE job_id = ANY($1::uuid[])", job_ids):
        pages[r["job_id"]].append(r)
    for r in await conn.fetch("SELECT * FROM job_chunks WHERE job_id = ANY($1::uuid[])", job_ids):
        chunks[r["job_id"]].append(r)
    return pages, chunks


async def insert_results(
    conn: asyncpg.Connection, results: Iterable[tuple[uuid.UUID, dict[str, Any]]]
) -> None:
    """First write wins: a job's result is stored once."""
    await conn.executemany(
        "INSERT INTO job_results (job_id, result) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING",
        list(results),
    )


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


# --- metrics ------------------------------------------------------------------------------


async def finished_job_times(conn: Conn, job_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT status, created_at, finished_at FROM jobs WHERE job_id = $1", job_id
    )


async def job_counts_by_status(conn: Conn) -> tuple[dict[str, int], int]:
    """Job counts by status, and how many unfinished jobs are stalled."""
    rows = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
    stalled = await conn.fetchval(
        "SELECT count(*) FROM jobs WHERE stalled AND status = ANY($1::text[])", ACTIVE
    )
    return {r["status"]: int(r["n"]) for r in rows}, int(stalled or 0)


# --- the admin page -----------------------------------------------------------------------

_ADMIN_JOB_COLUMNS = """job_id, tenant, filename, status, stage, percent, seq, format,
pages_total, stalled, error, partial, created_at, started_at, updated_at, finished_at"""


def like_pattern(term: str) -> str:
    """`term` as a literal inside a LIKE pattern (escape character: backslash)."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _admin_job_filter(status_filter: str | None, q: str | None) -> tuple[str, list[Any]]:
    """status_filter: a status, 'active' (queued or processing) or 'stalled' (active and
    stalled); q: a job id prefix, or part of the filename or tenant."""
    conditions: list[str] = []
    args: list[Any] = []
    if status_filter in ("active", "stalled"):
        args.append(ACTIVE)
        conditions.append(f"status = ANY(${len(args)}::text[])")
        if status_filter == "stalled":
            conditions.append("stalled")
    elif status_filter:
        args.append(status_filter)
        conditions.append(f"status = ${len(args)}")
    term = (q or "").strip()
    if term:
        args.append(like_pattern(term.lower()) + "%")
        id_prefix = f"${len(args)}"
        args.append("%" + like_pattern(term) + "%")
        part = f"${len(args)}"
        conditions.append(
            f"(job_id::text LIKE {id_prefix} ESCAPE '\\' OR filename ILIKE {part} ESCAPE '\\'"
            f" OR tenant ILIKE {part} ESCAPE '\\')"
        )
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    return where, args


async def admin_jobs(
    conn: Conn, status_filter: str | None, q: str | None, limit: int
) -> list[asyncpg.Record]:
    """Every tenant's jobs, newest first."""
    where, args = _admin_job_filter(status_filter, q)
    args.append(limit)
    sql = (
        f"SELECT {_ADMIN_JOB_COLUMNS} FROM jobs {where} "
        f"ORDER BY created_at DESC, job_id DESC LIMIT ${len(args)}"
    )
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
    return rows


_ADMIN_TOTALS = """
SELECT status, count(*) AS jobs,
       count(*) FILTER (WHERE stalled AND status = ANY($1::text[])) AS stalled,
       min(created_at) FILTER (WHERE status = ANY($1::text[])) AS oldest_active_at
FROM jobs GROUP BY status
"""

_ADMIN_RECENT = """
WITH recent AS (
    SELECT status, pages_total,
           created_at >= now() - make_interval(mins => $1) AS submitted,
           finished_at >= now() - make_interval(mins => $1) AS finished
    FROM jobs
    WHERE created_at >= now() - make_interval(mins => $1)
       OR finished_at >= now() - make_interval(mins => $1)
)
SELECT count(*) FILTER (WHERE submitted) AS submitted,
       count(*) FILTER (WHERE finished AND status = 'completed') AS completed,
       count(*) FILTER (WHERE finished AND status = 'failed') AS failed,
       coalesce(sum(pages_total) FILTER (WHERE finished AND status = 'completed'), 0) AS pages
FROM recent
"""


async def admin_totals(
    conn: Conn, window_minutes: int
) -> tuple[list[asyncpg.Record], asyncpg.Record]:
    """Jobs by status (with stalled and oldest active), and what the last window saw."""
    rows = await conn.fetch(_ADMIN_TOTALS, ACTIVE)
    recent = await conn.fetchrow(_ADMIN_RECENT, window_minutes)
    assert recent is not None  # an aggregate always answers one row
    return rows, recent
