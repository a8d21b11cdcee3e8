"""What progress reads without writing: updates for clients, metrics, the admin page."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from services.progress.arithmetic import Snapshot
from services.progress.store.base import ACTIVE, Conn

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
