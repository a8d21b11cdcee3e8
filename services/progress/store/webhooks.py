"""Webhook SQL: the tenants' default endpoints, the delivery outbox (written in the
transaction that ends a job or a batch), the sender's claims and attempts, and the listings.

A delivery's `dedupe_key` names its event (`job.completed:<job id>`), so an event is queued
once however often the transaction that produced it is retried or replayed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.progress.store.base import Conn
from shared.events import TERMINAL_STATUSES

_TERMINAL = sorted(TERMINAL_STATUSES)

# The URL: the job's own, else its tenant's default; jobs with neither queue nothing.
_ENQUEUE_JOB_EVENTS = """
INSERT INTO webhook_deliveries
    (delivery_id, dedupe_key, tenant, job_id, batch_id, event_type, url, data)
SELECT gen_random_uuid(), 'job.' || j.status || ':' || j.job_id, j.tenant, j.job_id,
       j.batch_id, 'job.' || j.status, coalesce(j.callback_url, e.url),
       jsonb_build_object(
           'job_id', j.job_id, 'status', j.status, 'error', j.error,
           'filename', j.filename, 'format', j.format, 'pages_total', j.pages_total,
           'batch_id', j.batch_id, 'finished_at', j.finished_at)
FROM jobs j LEFT JOIN webhook_endpoints e ON e.tenant = j.tenant
WHERE j.job_id = ANY($1::uuid[]) AND j.status = ANY($2::text[])
  AND coalesce(j.callback_url, e.url) IS NOT NULL
ON CONFLICT (dedupe_key) DO NOTHING
"""

# Run after the batches' rows are locked, as a statement of its own: its snapshot then sees
# every job a concurrent transaction ended before it released the batch row, so the last
# job of a batch to end is always seen with all the others ended.
_ENQUEUE_BATCH_EVENTS = """
WITH counts AS (
    SELECT j.batch_id,
           count(*) AS jobs_total,
           count(*) FILTER (WHERE j.status = 'completed') AS jobs_completed,
           count(*) FILTER (WHERE j.status = 'failed') AS jobs_failed,
           count(*) FILTER (WHERE j.status = 'cancelled') AS jobs_cancelled,
           count(*) FILTER (WHERE j.status <> ALL($2::text[])) AS unfinished,
           coalesce(sum(j.pages_total), 0) AS pages_total
    FROM jobs j WHERE j.batch_id = ANY($1::uuid[]) GROUP BY j.batch_id
)
INSERT INTO webhook_deliveries
    (delivery_id, dedupe_key, tenant, batch_id, event_type, url, data)
SELECT gen_random_uuid(), 'batch.completed:' || b.batch_id, b.tenant, b.batch_id,
       'batch.completed', coalesce(b.callback_url, e.url),
       jsonb_build_object(
           'batch_id', b.batch_id, 'name', b.name,
           'status', CASE WHEN c.jobs_completed > 0 THEN 'completed'
                          WHEN c.jobs_failed > 0 THEN 'failed' ELSE 'cancelled' END,
           'jobs_total', c.jobs_total, 'jobs_completed', c.jobs_completed,
           'jobs_failed', c.jobs_failed, 'jobs_cancelled', c.jobs_cancelled,
           'pages_total', c.pages_total, 'finished_at', now())
FROM batches b JOIN counts c ON c.batch_id = b.batch_id
     LEFT JOIN webhook_endpoints e ON e.tenant = b.tenant
WHERE c.unfinished = 0 AND coalesce(b.callback_url, e.url) IS NOT NULL
ON CONFLICT (dedupe_key) DO NOTHING
"""


async def enqueue_job_events(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> None:
    """Queue the event of each ended job that has a callback URL (its own or its tenant's),
    then the batch.completed event of each of their batches whose last job this was."""
    await conn.execute(_ENQUEUE_JOB_EVENTS, list(job_ids), _TERMINAL)
    batch_ids = await conn.fetch(
        "SELECT DISTINCT batch_id FROM jobs WHERE job_id = ANY($1::uuid[]) "
        "AND batch_id IS NOT NULL ORDER BY batch_id",
        list(job_ids),
    )
    if not batch_ids:
        return
    ids = [r["batch_id"] for r in batch_ids]
    await conn.execute(
        "SELECT 1 FROM batches WHERE batch_id = ANY($1::uuid[]) ORDER BY batch_id FOR UPDATE",
        ids,
    )
    await conn.execute(_ENQUEUE_BATCH_EVENTS, ids, _TERMINAL)


async def sync_endpoints(pool: asyncpg.Pool, defaults: Mapping[str, str]) -> None:
    """Make the tenants' default callback URLs those of the settings."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM webhook_endpoints WHERE NOT (tenant = ANY($1::text[]))", list(defaults)
        )
        await conn.executemany(
            "INSERT INTO webhook_endpoints (tenant, url) VALUES ($1, $2) "
            "ON CONFLICT (tenant) DO UPDATE SET url = excluded.url, updated_at = now() "
            "WHERE webhook_endpoints.url <> excluded.url",
            list(defaults.items()),
        )


# --- the sender ---------------------------------------------------------------------------

# Claimed rows are leased (next_attempt_at pushed past the attempt's end) and committed at
# once, so no transaction stays open over HTTP; a sender that dies mid-attempt leaves the
# row to be claimed again when the lease runs out. SKIP LOCKED: senders never wait on each
# other.
_CLAIM_DUE = """
UPDATE webhook_deliveries d
SET next_attempt_at = now() + make_interval(secs => $2), attempts = d.attempts + 1
FROM (SELECT delivery_id FROM webhook_deliveries
      WHERE status = 'pending' AND next_attempt_at <= now()
      ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due
WHERE d.delivery_id = due.delivery_id
RETURNING d.delivery_id, d.tenant, d.job_id, d.batch_id, d.event_type, d.url, d.data,
          d.attempts, d.failures, d.created_at
"""


async def claim_due(pool: asyncpg.Pool, limit: int, lease_seconds: float) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(_CLAIM_DUE, limit, lease_seconds)
    return rows


@dataclass(frozen=True)
class Attempt:
    """One attempt as it went, and what the delivery becomes after it."""

    delivery_id: uuid.UUID
    attempt: int
    started_at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None
    status: str  # pending (retry at next_attempt_at), delivered or failed
    failures: int
    next_attempt_at: datetime | None


async def record_attempt(pool: asyncpg.Pool, attempt: Attempt) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO webhook_attempts "
            "(delivery_id, attempt, started_at, status_code, latency_ms, error) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            attempt.delivery_id,
            attempt.attempt,
            attempt.started_at,
            attempt.status_code,
            attempt.latency_ms,
            attempt.error,
        )
        await conn.execute(
            """
            UPDATE webhook_deliveries
            SET status = $2, failures = $3, next_attempt_at = coalesce($4, next_attempt_at),
                last_error = $5,
                delivered_at = CASE WHEN $2 = 'delivered' THEN now() ELSE delivered_at END
            WHERE delivery_id = $1
            """,
            attempt.delivery_id,
            attempt.status,
            attempt.failures,
            attempt.next_attempt_at,
            attempt.error,
        )


async def redeliver(conn: Conn, delivery_id: uuid.UUID) -> asyncpg.Record | None:
    """Queue a delivery again now, with a fresh retry schedule (an admin's redelivery)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE webhook_deliveries SET status = 'pending', failures = 0, next_attempt_at = now() "
        "WHERE delivery_id = $1 RETURNING delivery_id, status, job_id, batch_id",
        delivery_id,
    )
    return row


# --- listings -----------------------------------------------------------------------------

_LIST = """
SELECT d.delivery_id, d.event_type, d.url, d.status, d.attempts, d.next_attempt_at,
       d.last_error, d.created_at, d.delivered_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'attempt', a.attempt, 'started_at', a.started_at,
                     'status_code', a.status_code, 'latency_ms', a.latency_ms,
                     'error', a.error) ORDER BY a.attempt)
                 FROM webhook_attempts a WHERE a.delivery_id = d.delivery_id),
                '[]'::jsonb) AS history
FROM webhook_deliveries d
WHERE {where}
ORDER BY d.created_at, d.delivery_id
"""


async def deliveries_of_job(conn: Conn, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """A job's deliveries, oldest first, each with its attempts in order."""
    return [dict(r) for r in await conn.fetch(_LIST.format(where="d.job_id = $1"), job_id)]


async def deliveries_of_batch(conn: Conn, batch_id: uuid.UUID) -> list[dict[str, Any]]:
    """A batch's own deliveries (batch.completed), as deliveries_of_job."""
    where = "d.batch_id = $1 AND d.job_id IS NULL"
    return [dict(r) for r in await conn.fetch(_LIST.format(where=where), batch_id)]


async def batch_tenant(conn: Conn, batch_id: uuid.UUID) -> str | None:
    tenant: str | None = await conn.fetchval(
        "SELECT tenant FROM batches WHERE batch_id = $1", batch_id
    )
    return tenant


__all__ = [
    "Attempt",
    "claim_due",
    "batch_tenant",
    "deliveries_of_batch",
    "deliveries_of_job",
    "enqueue_job_events",
    "record_attempt",
    "redeliver",
    "sync_endpoints",
]
