"""Prometheus metrics of the progress service: jobs by status (from PostgreSQL), job and
first-progress latency, stalls, and the WebSocket push path."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Gauge, Histogram

log = structlog.get_logger(__name__)

STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
FINAL_STATUSES = ("completed", "failed", "cancelled")
# How often the job counts are read from PostgreSQL.
JOB_STATS_SECONDS = 15.0

JOBS = Gauge("docpipe_jobs", "Jobs in the database, by status", ["status"])
JOBS_STALLED = Gauge("docpipe_jobs_stalled", "Unfinished jobs currently marked stalled")
JOB_DURATION = Histogram(
    "docpipe_job_duration_seconds",
    "From a job's creation to its final status, by that status",
    ["status"],
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
)
TIME_TO_FIRST_PROGRESS = Histogram(
    "docpipe_time_to_first_progress_seconds",
    "From a job's creation to its first move out of 'queued'",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
WEBSOCKET_CLIENTS = Gauge(
    "docpipe_websocket_clients", "WebSocket clients connected to a job's progress stream"
)
PUSH_LAG = Histogram(
    "docpipe_push_lag_seconds",
    "From the event occurring (event.occurred_at) to its progress update being sent to a client",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)

# Every status series exists from the start, so ratios and alerts see zeros, not gaps.
for _status in STATUSES:
    JOBS.labels(status=_status)
for _status in FINAL_STATUSES:
    JOB_DURATION.labels(status=_status)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def observe_first_progress(seconds: float | None) -> None:
    if seconds is not None:
        TIME_TO_FIRST_PROGRESS.observe(seconds)


async def observe_finished(pool: asyncpg.Pool, updates: list[dict[str, Any]]) -> None:
    """Observe the duration of every job whose final update is in `updates` (each final
    update is recorded and pushed exactly once, so each job is observed once)."""
    for update in updates:
        if not update.get("final"):
            continue
        try:
            row = await pool.fetchrow(
                "SELECT status, created_at, finished_at FROM jobs WHERE job_id = $1",
                uuid.UUID(update["job_id"]),
            )
        except Exception as exc:  # a metric must never fail the message it describes
            log.warning("could not read a finished job for metrics", error=repr(exc)[:300])
            continue
        if row is None:
            continue
        end = row["finished_at"] or datetime.now(UTC)
        seconds = seconds_between(row["created_at"], end)
        if seconds is not None:
            JOB_DURATION.labels(status=row["status"]).observe(seconds)


async def read_job_stats(pool: asyncpg.Pool) -> tuple[dict[str, int], int]:
    """Job counts by status, and how many unfinished jobs are stalled."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT status, count(*) AS n FROM jobs GROUP BY status")
        stalled = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE stalled AND status IN ('queued', 'processing')"
        )
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({r["status"]: int(r["n"]) for r in rows})
    return counts, int(stalled or 0)


async def job_stats_loop(pool: asyncpg.Pool, interval: float = JOB_STATS_SECONDS) -> None:
    while True:
        try:
            counts, stalled = await read_job_stats(pool)
            for status, n in counts.items():
                JOBS.labels(status=status).set(n)
            JOBS_STALLED.set(stalled)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the last numbers; the next round retries
            log.warning("reading job stats failed", error=repr(exc)[:300])
        await asyncio.sleep(interval)
