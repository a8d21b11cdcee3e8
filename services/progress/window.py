"""The one way events reach progress's tables: apply a window of events, of any jobs, in the
caller's transaction. One event is a window of one.

Per window: uploads create their job rows; one statement locks every job row of the window
(ordered by job_id, so two windows cannot deadlock); one statement per item kind writes the
pages, OCR results and chunks of all jobs (first write wins, so a duplicate moves nothing);
the events' own changes to each job are applied in order (transitions.advance); one
statement moves the counters; jobs that may be done are completed together (lifecycle); and
one executemany writes the job rows and one the updates: at most one update per job per
window, the latest state of the job.

Because item writes are first-write-wins and percent only moves up, applying events together
in any order gives the same rows, counters and result as applying them one by one. A job's
terminal event (job.failed, job.cancelled) is applied after the items of its window, so the
batcher sends those events, uploads and retried messages as windows of one.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

import asyncpg

from services.progress import batch_refresh, deduplicated, lifecycle, store
from services.progress.analysis import Spend, apply_spend
from services.progress.arithmetic import Counts
from services.progress.lifecycle import JobWrite, Settling, plan_save, utcnow
from services.progress.models import Outcome
from services.progress.store import retention as retention_store
from services.progress.transitions import advance, first_progress_seconds
from services.progress.webhooks import hooks as webhooks
from shared.errors import JobGone
from shared.events import (
    TERMINAL_STATUSES,
    ChunksAnalyzed,
    DocumentUploaded,
    Event,
    ImagesExtracted,
    JobCancelled,
    JobCompleted,
    JobDeduplicated,
    JobFailed,
    PageExtracted,
    PageOcred,
    PagesExtracted,
)
from shared.jobs import ensure_job, is_deleted

# A terminal event for a job that does not exist, on its last attempt: nothing can ever
# apply it, so it is dropped rather than dead-lettered.
TERMINAL_EVENTS = (JobFailed, JobCancelled, JobCompleted)


class JobNotFoundYet(Exception):
    """The event overtook its job's creation; the bus retries it later."""


@dataclass(frozen=True)
class Incoming:
    """An event as delivered: `redelivered` when the message was seen before (a retry or a
    broker redelivery), `last_attempt` when the bus will not retry it again."""

    event: Event
    redelivered: bool = False
    last_attempt: bool = False


@dataclass
class JobResult:
    """What a window did to one job: its outcome (to deliver after commit) and when the latest
    of its events occurred (for the push-lag metric)."""

    outcome: Outcome
    occurred_at: datetime | None


@dataclass
class WindowResult:
    jobs: dict[uuid.UUID, JobResult] = field(default_factory=dict)
    # Events that were not applied, by index: JobNotFoundYet (retry), JobGone (drop).
    errors: dict[int, Exception] = field(default_factory=dict)


async def apply_window(conn: asyncpg.Connection, incoming: Sequence[Incoming]) -> WindowResult:
    """Apply the events in the caller's transaction; at most one update per job."""
    result = WindowResult()
    await _create_uploaded_jobs(conn, incoming, result.errors)
    wanted = [inc.event.job_id for i, inc in enumerate(incoming) if i not in result.errors]
    rows = await store.lock_jobs(conn, wanted)
    live: dict[uuid.UUID, JobWrite] = {}
    ended: dict[uuid.UUID, Settling] = {}
    events: list[Event] = []
    for i, inc in enumerate(incoming):
        if i in result.errors:
            continue
        row = rows.get(inc.event.job_id)
        if row is None:
            result.errors[i] = await _missing(conn, inc)
        elif row["status"] in TERMINAL_STATUSES:
            _note_ended(ended, row, inc)
        else:
            if row["job_id"] not in live:
                live[row["job_id"]] = JobWrite.of(row)
            events.append(inc.event)
    now = utcnow()
    if live:
        await _apply_live(conn, live, events, now)
    await lifecycle.settle_terminal(conn, list(ended.values()), now)
    await batch_refresh.refresh(conn, [*live.values(), *(s.job for s in ended.values())], now)
    latest = _latest_occurred(events)
    for job in [*live.values(), *(s.job for s in ended.values())]:
        result.jobs[job.job_id] = JobResult(job.outcome, latest.get(job.job_id))
    return result


async def apply_event(
    pool: asyncpg.Pool, event: Event, *, last_attempt: bool = False, redelivered: bool = False
) -> Outcome:
    """One event as a window of one, in a transaction of its own. Raises JobNotFoundYet when
    its job does not exist yet, JobGone when the event is to be dropped."""
    async with pool.acquire() as conn, conn.transaction():
        result = await apply_window(conn, [Incoming(event, redelivered, last_attempt)])
    if 0 in result.errors:
        raise result.errors[0]
    job = result.jobs.get(event.job_id)
    return job.outcome if job is not None else Outcome()


async def _create_uploaded_jobs(
    conn: asyncpg.Connection, incoming: Sequence[Incoming], errors: dict[int, Exception]
) -> None:
    """An upload published straight onto the bus creates its job. One that reuses another
    job's id (ensure_job raises JobGone) is dropped alone, in a savepoint of its own, so the
    rest of the window still applies."""
    for i, inc in enumerate(incoming):
        if type(inc.event) is not DocumentUploaded:
            continue
        try:
            async with conn.transaction():
                await ensure_job(conn, inc.event)
        except JobGone as exc:
            errors[i] = exc


async def _missing(conn: asyncpg.Connection, inc: Incoming) -> Exception:
    if inc.last_attempt and isinstance(inc.event, TERMINAL_EVENTS):
        return JobGone("the job does not exist")
    if await is_deleted(conn, inc.event.job_id):
        return JobGone("the job was deleted")  # a late message: nothing of it is kept
    return JobNotFoundYet(f"job {inc.event.job_id} not found (yet) for {inc.event.routing_key}")


def _note_ended(ended: dict[uuid.UUID, Settling], row: asyncpg.Record, inc: Incoming) -> None:
    settling = ended.setdefault(row["job_id"], Settling(JobWrite.of(row)))
    # job.completed is this service's own announcement: reading it back re-announces nothing.
    if inc.redelivered and not isinstance(inc.event, JobCompleted):
        settling.redelivered = True
    if isinstance(inc.event, JobCancelled):
        settling.cancelled_at = inc.event.occurred_at


def _latest_occurred(events: list[Event]) -> dict[uuid.UUID, datetime]:
    latest: dict[uuid.UUID, datetime] = {}
    for ev in events:
        at = latest.get(ev.job_id)
        latest[ev.job_id] = ev.occurred_at if at is None else max(at, ev.occurred_at)
    return latest


async def _write_items(conn: asyncpg.Connection, events: list[Event], spend: Spend) -> store.Deltas:
    """Write the pages, OCR results and chunks of every job, one statement per kind; returns
    the counter deltas of what was written first (and the AI spend of its chunks in `spend`)."""
    # Sorted by exact type in one pass: isinstance on pydantic models is an ABC check, and
    # this runs for every event of every window.
    by_type: dict[type[Event], list[Event]] = defaultdict(list)
    for ev in events:
        by_type[type(ev)].append(ev)
    deltas: store.Deltas = {}
    pages = cast(list[PageExtracted], by_type[PageExtracted])
    for batch in cast(list[PagesExtracted], by_type[PagesExtracted]):
        pages += batch.pages
    if pages:
        await store.write_pages_extracted(conn, pages, deltas)
    if ocred := cast(list[PageOcred], by_type[PageOcred]):
        await store.write_pages_ocred(conn, ocred, deltas)
    if chunks := cast(list[ChunksAnalyzed], by_type[ChunksAnalyzed]):
        await store.write_chunks_analyzed(conn, chunks, deltas, spend)
    if images := cast(list[ImagesExtracted], by_type[ImagesExtracted]):
        await retention_store.record_image_blobs(conn, images)
    return deltas


async def _apply_live(
    conn: asyncpg.Connection, jobs: dict[uuid.UUID, JobWrite], events: list[Event], now: datetime
) -> None:
    spend: Spend = {}
    deltas = await _write_items(conn, events, spend)
    for job_id, job_spend in spend.items():
        apply_spend(jobs[job_id].state, job_spend)
    activity: set[uuid.UUID] = set()
    for ev in events:
        job = jobs[ev.job_id]
        delta = advance(job.state, ev, job.row["revived_at"])
        if delta.nonzero:
            deltas[ev.job_id] = deltas.get(ev.job_id, Counts()).plus(delta)
        if type(ev) is ImagesExtracted:
            activity.add(ev.job_id)
    job_ids = sorted(jobs)
    counts = await store.move_counts(conn, job_ids, deltas)
    moved_counts = dict(counts)  # as the window's events moved them, before any recount
    for ev in events:
        if type(ev) is JobDeduplicated:
            copied = await deduplicated.resolve(conn, jobs[ev.job_id], ev.source_job_id, now)
            counts[ev.job_id] = copied or counts[ev.job_id]
    await lifecycle.complete_many(conn, list(jobs.values()), counts)
    await lifecycle.keep_cancelled(conn, list(jobs.values()))
    saves, updates = [], []
    for j in job_ids:
        job, delta = jobs[j], deltas.get(j, Counts())
        moved = delta.nonzero or j in activity or job.state != job.before
        if moved:
            job.state.stalled = False
        job.outcome.first_progress_seconds = first_progress_seconds(job.row, job.state, now)
        old_counts = moved_counts[j].minus(delta)
        args, update = plan_save(job, counts[j], old_counts, moved=moved, now=now)
        if args is not None:
            saves.append(args)
        if update is not None:
            updates.append(update)
            job.outcome.updates.append(update)
    await store.save_jobs(conn, saves, updates, now)
    await webhooks.enqueue_ended(conn, updates)
    await deduplicated.settle_followers(conn, jobs.values(), now)
