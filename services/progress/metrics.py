"""Prometheus metrics of the progress service: jobs by status (from PostgreSQL), job and
first-progress latency, stalls, and the WebSocket push path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime

import asyncpg
import structlog
from prometheus_client import Gauge, Histogram

from services.progress import store
from services.progress.arithmetic import Snapshot
from shared.events import TERMINAL_STATUSES, JobStatus

log = structlog.get_logger(__name__)

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
for _status in JobStatus:
    JOBS.labels(status=_status.value)
for _status in TERMINAL_STATUSES:
    JOB_DURATION.labels(status=_status.value)


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def observe_first_progress(seconds: float | None) -> None:
    if seconds is not None:
        TIME_TO_FIRST_PROGRESS.observe(seconds)


async def observe_finished(pool: asyncpg.Pool, updates: Iterable[Snapshot]) -> None:
    """Observe the duration of every job whose final update is in `updates` (each final
    update is recorded and pushed exactly once, so each job is observed once)."""
    for update in updates:
        if not update["final"]:
            continue
        try:
            row = await store.finished_job_times(pool, uuid.UUID(update["job_id"]))
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
        by_status, stalled = await store.job_counts_by_status(conn)
    counts = {status.value: 0 for status in JobStatus}
    counts.update(by_status)
    return counts, stalled


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
