"""Reads of the LLM call ledger (llm_calls, written by the analyzer's engine) for the cost
endpoints and the admin page. Read-only: the analyzer alone writes the ledger.

A row still `reserved` is a call in flight, or one whose answer was lost (a crash between the
call and its settlement): its cost_usd is its reserved worst case, so it counts as spent.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from services.progress.store.base import Conn

_SUMS = """count(*) AS calls,
       coalesce(sum(input_tokens), 0)::bigint AS input_tokens,
       coalesce(sum(output_tokens), 0)::bigint AS output_tokens,
       coalesce(sum(cached_tokens), 0)::bigint AS cached_tokens,
       coalesce(sum(cost_usd), 0)::float8 AS cost_usd"""


async def job_cost_lines(conn: Conn, job_id: uuid.UUID) -> list[asyncpg.Record]:
    """The job's ledger grouped by stage, task, model and outcome (one row per group)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT stage, task, model, outcome, {_SUMS}"
        " FROM llm_calls WHERE job_id = $1 GROUP BY stage, task, model, outcome"
        " ORDER BY stage, task, model, outcome",
        job_id,
    )
    return rows


async def usage_lines(
    conn: Conn, tenant: str | None, since: datetime, until: datetime
) -> list[asyncpg.Record]:
    """Spend per tenant, UTC day and model in [since, until); one tenant's, or every tenant's
    when `tenant` is None."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT tenant, (created_at AT TIME ZONE 'UTC')::date AS day, model, "
        f"{_SUMS} FROM llm_calls"
        " WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR tenant = $3)"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        since,
        until,
        tenant,
    )
    return rows


async def job_spend(conn: Conn, job_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[int, float]]:
    """Per job: (tokens in + out, USD) on the ledger; jobs without a call are left out."""
    rows = await conn.fetch(
        "SELECT job_id, coalesce(sum(input_tokens + output_tokens), 0)::bigint AS tokens,"
        " coalesce(sum(cost_usd), 0)::float8 AS cost_usd"
        " FROM llm_calls WHERE job_id = ANY($1::uuid[]) GROUP BY job_id",
        job_ids,
    )
    return {r["job_id"]: (int(r["tokens"]), float(r["cost_usd"])) for r in rows}
