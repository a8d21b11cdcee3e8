"""How jobs end: completion (confirmed by a recount), the result kept when a job completes or
is cancelled, terminal jobs that receive more events, and the stall/deadline sweep.

Every function works inside the caller's transaction on rows the caller locked, except
sweep_stalls, which runs its own short transactions.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from services.progress import batch_refresh, store
from services.progress.analysis import analysis_section, awaits_summary, summary_request
from services.progress.arithmetic import (
    Counts,
    Snapshot,
    build_snapshot,
    is_complete,
    next_percent,
    snapshot_content,
    stage_name,
)
from services.progress.costmodel import BOOK, FormatCosts, cost_key
from services.progress.models import Outcome
from services.progress.result import finished_at_of, result_head
from services.progress.transitions import JobState, deadline_reason
from services.progress.webhooks import hooks as webhooks
from shared.events import JobCompleted, JobFailed, JobStatus

SAVE_NOTHING = (None, None)
# Called with jobs a sweep ended, in the transaction that ended them.
EndedHook = Callable[[asyncpg.Connection, "list[JobWrite]", datetime], Awaitable[None]]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class JobWrite:
    """One locked job in a write: its row as read (and its state then), the state it moves
    to, its outcome."""

    row: asyncpg.Record
    before: JobState
    state: JobState
    outcome: Outcome = field(default_factory=Outcome)

    @classmethod
    def of(cls, row: asyncpg.Record, outcome: Outcome | None = None) -> JobWrite:
        before = JobState.of(row)
        return cls(row, before, replace(before), outcome or Outcome())

    @property
    def job_id(self) -> uuid.UUID:
        job_id: uuid.UUID = self.row["job_id"]
        return job_id


def costs_of(fmt: str | None, counts: Counts) -> FormatCosts:
    """The learned costs a job's percent and ETA use."""
    return BOOK.for_format(cost_key(fmt, counts.ocr.total, counts.extract.done))


# --- snapshots ----------------------------------------------------------------------------


def snapshot_of(
    row: asyncpg.Record,
    counts: Counts,
    *,
    now: datetime | None = None,
    state: JobState | None = None,
) -> Snapshot:
    """The snapshot a job row and its counters describe (seq as stored). `state`: the row's
    state, when the caller has it already."""
    state = state or JobState.of(row)
    return build_snapshot(
        job_id=str(row["job_id"]),
        seq=row["seq"],
        status=state.status,
        stage=state.stage,
        percent=state.percent,
        counts=counts,
        pages_total=row["pages_total"],
        stalled=row["stalled"],
        error=row["error"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        now=now,
        tokens=state.tokens,
        cost_usd=state.cost_usd,
        costs=costs_of(state.format, counts),
    )


async def latest_snapshot(conn: asyncpg.Connection, job_id: uuid.UUID) -> Snapshot | None:
    """The last update recorded, or (before any) one computed from the job row with seq 0.

    Read in one snapshot of the database: otherwise a window committing between "no update
    yet" and reading the row would give a seq-0 snapshot of an already finished job, and a
    client would then see the end twice (seq 0, then seq 1)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        update = await store.latest_update(conn, job_id)
        if update is not None:
            return update
        row = await store.read_job(conn, job_id)
        if row is None:
            return None
        snapshot = snapshot_of(row, await store.read_counts(conn, job_id), now=utcnow())
    snapshot["seq"] = 0
    return snapshot


def plan_save(
    job: JobWrite,
    counts: Counts,
    old_counts: Counts,
    *,
    moved: bool,
    now: datetime,
    force: bool = False,
) -> tuple[tuple[object, ...] | None, Snapshot | None]:
    """What to write for one job, without writing it: the job row's arguments (None: nothing
    to write) and the next update (None: what a client sees did not change)."""
    row, state = job.row, job.state
    costs = costs_of(state.format, counts)
    state.stage = stage_name(state.status, state.pages_total, counts)
    state.percent = next_percent(state.status, state.percent, state.pages_total, counts, costs)
    new = build_snapshot(
        job_id=str(row["job_id"]),
        seq=row["seq"] + 1,
        status=state.status,
        stage=state.stage,
        percent=state.percent,
        counts=counts,
        pages_total=state.pages_total,
        stalled=state.stalled,
        error=state.error,
        updated_at=now,
        started_at=state.started_at,
        now=now,
        tokens=state.tokens,
        cost_usd=state.cost_usd,
        costs=costs,
    )
    changed = (
        force
        or row["seq"] == 0
        or snapshot_content(snapshot_of(row, old_counts, state=job.before)) != snapshot_content(new)
    )
    if not changed and not moved:
        return SAVE_NOTHING
    seq = row["seq"] + 1 if changed else row["seq"]
    return store.save_args(job.job_id, state, seq, now), (new if changed else None)


async def save_one(
    conn: asyncpg.Connection, job: JobWrite, counts: Counts, *, now: datetime, force: bool = False
) -> None:
    """Write one job whose counters did not move (sweeps, revives, settling)."""
    args, update = plan_save(job, counts, counts, moved=False, now=now, force=force)
    await store.save_jobs(conn, [args] if args else [], [update] if update else [], now)
    if update is not None:
        job.outcome.updates.append(update)
        await webhooks.enqueue_ended(conn, [update])


# --- results ------------------------------------------------------------------------------


async def store_results(
    conn: asyncpg.Connection, jobs: list[JobWrite], *, partial: bool
) -> dict[uuid.UUID, int]:
    """Assemble and store the result of each job (set-based whatever the number of jobs),
    with the status each job's state has; returns each job's chunk count."""
    if not jobs:
        return {}
    totals = await store.item_totals(conn, [j.job_id for j in jobs])
    results = []
    chunk_counts: dict[uuid.UUID, int] = {}
    for job in jobs:
        j, state = job.job_id, job.state
        end = finished_at_of(state.started_at, totals[j])
        state.finished_at = state.finished_at or end or job.row["created_at"]
        fields = {
            "format": state.format,
            "pages_total": state.pages_total,
            "document_metadata": state.document_metadata,
        }
        result = result_head(
            {**dict(job.row), **fields, "started_at": state.started_at},
            totals[j],
            status=state.status,
            finished_at=state.finished_at,
            partial=partial or state.partial,
        )
        if (section := analysis_section(job.row, state)) is not None:
            result["analysis"] = section
            result["cost"] = {"total_usd": round(state.cost_usd, 6)}
        results.append((j, result))
        chunk_counts[j] = totals[j].chunks
    await store.insert_results(conn, results)
    return chunk_counts


def completed_event(job: JobWrite, chunks_total: int, finished_at: datetime) -> JobCompleted:
    # occurred_at = finished_at, so a republished JobCompleted has the same body.
    return JobCompleted(
        job_id=job.job_id,
        tenant=job.row["tenant"],
        pages_total=job.state.pages_total or 0,
        chunks_total=chunks_total,
        occurred_at=finished_at,
    )


async def complete_many(
    conn: asyncpg.Connection, jobs: list[JobWrite], counts: dict[uuid.UUID, Counts]
) -> None:
    """Complete every processing job the counts say is done: confirm with one recount (set-
    based; completion never rests on arithmetic drift), store the results, mark them
    completed and queue their JobCompleted. Updates `counts` with the recounted values."""
    candidates = [
        j
        for j in jobs
        if j.state.status == JobStatus.PROCESSING
        and is_complete(j.state.pages_total, counts[j.job_id])
    ]
    if not candidates:
        return
    recounted = await store.recount_many(
        conn, [(j.job_id, j.state.pages_total) for j in candidates]
    )
    counts.update(recounted)
    done = [j for j in candidates if is_complete(j.state.pages_total, recounted[j.job_id])]
    complete = []
    for job in done:
        if not awaits_summary(job.row, job.state):
            complete.append(job)
        elif (ask := summary_request(job.row, job.state)) is not None:
            job.outcome.publish.append(ask)
    for job in complete:
        job.state.status = JobStatus.COMPLETED
    chunk_counts = await store_results(conn, complete, partial=False)
    for job in complete:
        assert job.state.finished_at is not None  # set by store_results
        job.outcome.publish.append(
            completed_event(job, chunk_counts[job.job_id], job.state.finished_at)
        )


async def keep_cancelled(conn: asyncpg.Connection, jobs: list[JobWrite]) -> None:
    """Cancelled jobs keep whatever was done: a partial result of the pages and chunks so
    far."""
    await store_results(
        conn, [j for j in jobs if j.state.status == JobStatus.CANCELLED], partial=True
    )


# --- terminal jobs ------------------------------------------------------------------------


@dataclass
class Settling:
    """A job that had already ended when events for it arrived."""

    job: JobWrite
    redelivered: bool = False  # one of the events was seen before
    cancelled_at: datetime | None = None  # one of them was its job.cancelled


async def settle_terminal(conn: asyncpg.Connection, jobs: list[Settling], now: datetime) -> None:
    """Events for jobs that have already ended change nothing, with two exceptions. A
    retried message of a completed job may be the one whose JobCompleted publish failed
    after commit: announce it again (same id and body, a duplicate for its consumers). A job
    whose status was written elsewhere without a final update (an ingest that cancelled by
    writing the row) gets its final update, and a cancelled one its partial result."""
    if not jobs:
        return
    pushed = await store.last_pushed_statuses(conn, [s.job.job_id for s in jobs])
    for settling in jobs:
        job = settling.job
        if pushed.get(job.job_id) != job.row["status"]:
            await _finish_unsettled(conn, settling, now)
        elif settling.redelivered and job.state.status == JobStatus.COMPLETED:
            chunks = await store.chunk_count(conn, job.job_id)
            at = job.state.finished_at or now
            job.outcome.publish.append(completed_event(job, chunks, at))


async def _finish_unsettled(conn: asyncpg.Connection, settling: Settling, now: datetime) -> None:
    job = settling.job
    if job.state.status == JobStatus.CANCELLED:
        job.state.partial = True
        job.state.finished_at = job.state.finished_at or settling.cancelled_at
        await keep_cancelled(conn, [job])
    job.state.finished_at = job.state.finished_at or now
    counts = await store.read_counts(conn, job.job_id)
    # The row may already read like the final snapshot, but no client has been told.
    await save_one(conn, job, counts, now=now, force=True)


# --- stalls and deadlines -----------------------------------------------------------------


async def sweep_stalls(
    pool: asyncpg.Pool,
    *,
    stall_seconds: float,
    deadline_seconds: float,
    batch: int = 100,
    now: datetime | None = None,
    on_ended: EndedHook | None = None,
) -> Outcome:
    """Mark processing jobs without activity for stall_seconds as stalled, and fail jobs past
    their deadline. Jobs locked by an event in flight are skipped (they are moving).
    `on_ended`: called in the transaction that failed a job (its duplicates end with it)."""
    now = now or utcnow()
    stall_before = now - timedelta(seconds=stall_seconds)
    deadline_before = now - timedelta(seconds=deadline_seconds)
    outcome = Outcome()
    for job_id in await store.stall_candidates(pool, stall_before, deadline_before, batch):
        async with pool.acquire() as conn, conn.transaction():
            row = await store.lock_stall_candidate(conn, job_id, stall_before, deadline_before)
            if row is None:
                continue
            job = JobWrite.of(row, outcome)
            # A job revived by a dead-letter replay gets a fresh deadline.
            if (row["revived_at"] or row["created_at"]) < deadline_before:
                job.state.status = JobStatus.FAILED
                job.state.error = deadline_reason(deadline_seconds)
                job.state.finished_at = job.state.finished_at or now
                outcome.publish.append(
                    JobFailed(job_id=job_id, stage="progress", reason=job.state.error)
                )
            else:
                job.state.stalled = True
            await save_one(conn, job, await store.read_counts(conn, job_id), now=now)
            if on_ended is not None and job.state.terminal:
                await on_ended(conn, [job], now)
            await batch_refresh.refresh(conn, [job], now)
    return outcome
