"""Duplicate jobs (ingest's services/ingest/dedup.py decides which): a job.deduplicated
completes its job with a copy of the source's result when the source has completed, and
leaves it queued, a follower, while the source runs; when a source ends, its waiting followers
end with it, in the same transaction: completed with the same result, or failed with a
sentence naming the source and why it did not complete.

Both run inside a window's transaction on locked rows, so a follower is settled exactly once
whichever comes first, its own job.deduplicated or its source's end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime

import asyncpg

from services.progress import store
from services.progress.arithmetic import Counts
from services.progress.lifecycle import JobWrite, completed_event, save_one
from services.progress.store import dedup as dedup_store
from shared.events import JobFailed, JobStatus


def source_failed_reason(source_id: uuid.UUID, status: str | None, error: str | None) -> str:
    """Why a duplicate cannot complete: its source did not, and will not."""
    if status is None:
        return f"The identical document processed by job {source_id} was deleted; submit it again."
    if status == JobStatus.CANCELLED:
        return (
            f"The identical document processed by job {source_id} was cancelled before it "
            "finished; submit it again."
        )
    return f"The identical document processed by job {source_id} failed: {error}"


async def resolve(
    conn: asyncpg.Connection, job: JobWrite, source_id: uuid.UUID, now: datetime
) -> Counts | None:
    """Apply what the source's state means to the (locked, not yet ended) duplicate `job`.
    Returns its counters when it completed with the source's result."""
    if job.state.terminal:
        return None  # a redelivered job.deduplicated in the same window
    source = await dedup_store.read_source(conn, source_id)
    status = source["status"] if source is not None else None
    if status == JobStatus.COMPLETED:
        assert source is not None
        chunks = await dedup_store.copy_completion(conn, job.row, source_id, now)
        if chunks is not None:
            state = job.state
            state.status = JobStatus.COMPLETED
            state.format = source["format"]
            state.pages_total = source["pages_total"]
            state.started_at = state.started_at or now
            state.finished_at = now
            job.outcome.publish.append(completed_event(job, chunks, now))
            return await store.read_counts(conn, job.job_id)
    if status in (JobStatus.QUEUED, JobStatus.PROCESSING):
        job.state.status = JobStatus.QUEUED  # a follower: its source's end settles it
        return None
    error = source["error"] if source is not None else None
    reason = source_failed_reason(source_id, status, error)
    job.state.status = JobStatus.FAILED
    job.state.error = reason
    job.state.finished_at = now
    job.outcome.publish.append(JobFailed(job_id=job.job_id, stage="dedup", reason=reason))
    return None


async def settle_followers(
    conn: asyncpg.Connection, sources: Iterable[JobWrite], now: datetime
) -> None:
    """Sources that ended in this window (rows already saved): end their waiting followers.
    The followers' updates and events travel with their source's outcome."""
    ended = {j.job_id: j for j in sources if j.state.terminal and not j.before.terminal}
    if not ended:
        return
    for row in await dedup_store.lock_waiting_followers(conn, list(ended)):
        source = ended[row["deduplicated_from"]]
        follower = JobWrite.of(row, source.outcome)
        copied = await resolve(conn, follower, source.job_id, now)
        counts = copied if copied is not None else await store.read_counts(conn, follower.job_id)
        await save_one(conn, follower, counts, now=now, force=True)
