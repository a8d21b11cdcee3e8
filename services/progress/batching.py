"""Batched progress: events of ALL jobs arriving within a few milliseconds (or until
`max_batch` of them) form one window, applied in ONE transaction with set-based statements,
and each job of the window gets at most one coalesced update.

Per window: one statement locks every job row of the window (ordered by job_id, so two
windows of different replicas cannot deadlock); one statement per item kind writes the
pages, OCR results and chunks of all jobs (unnest arrays, first write wins); one statement
moves the counters of every job that moved and one reads the others; one executemany writes
the job rows and one the job_updates rows (one per job: the latest state of the job in the
window). Then it commits, pushes the snapshots, and only then lets every handler return, so
the bus acks each message after the commit (at-least-once is kept).

Windows are applied one after another by a single worker: while one window is applied the
next one fills, so under load a window holds whatever arrived meanwhile and the cost per
event falls as the rate rises (the cost per window is a handful of round trips). One job's
updates are therefore committed and pushed in seq order.

Correctness rests on what aggregate.py guarantees per event: item writes are first-write-wins
(a duplicate moves no counter), so applying events together in any order gives the same rows
and counters as applying them one by one; percent only moves up (next_percent) and seq grows
by one per stored update. Anything unusual goes through the per-event path unchanged:
terminal and upload events, retried messages, a job that is missing or already ended, and,
if a window's transaction fails, every event of that window one by one (so each message gets
its own retry or dead-letter outcome from the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from prometheus_client import Histogram

from services.progress.aggregate import (
    INSERT_UPDATE,
    SAVE_JOB,
    JobState,
    Outcome,
    _clean,
    _counts_of,
    _utcnow,
    apply_event,
    complete_many,
    plan_save,
)
from services.progress.arithmetic import TERMINAL, Counts, StageCount
from shared.bus import Delivery
from shared.events import (
    AnalyzedChunk,
    ChunksAnalyzed,
    Event,
    ExtractionStarted,
    ImagesExtracted,
    PageExtracted,
    PageOcred,
    PagesExtracted,
)

log = structlog.get_logger(__name__)

WINDOW_SECONDS = Histogram(
    "docpipe_progress_window_seconds",
    "Applying one progress window: transaction, commit and pushes",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
WINDOW_EVENTS = Histogram(
    "docpipe_progress_window_events",
    "Events applied together in one progress window",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)

# Events that only move counters or mark activity: safe to apply together.
BATCHABLE = (
    ExtractionStarted,
    PageExtracted,
    PagesExtracted,
    PageOcred,
    ChunksAnalyzed,
    ImagesExtracted,
)

STAGES = ("extract", "ocr", "analyze")

# app.push: push updates after commit (never waits); the datetime is when the (latest) event
# behind them occurred, for the push-lag metric. app.follow_up: what may wait after the push
# (metrics read from the database, follow-up events published with confirms).
Push = Callable[[Outcome, datetime | None], None]
FollowUp = Callable[[Outcome], Awaitable[None]]


@dataclass
class _Item:
    event: Event
    delivery: Delivery
    done: asyncio.Future[None]
    arrived: float = 0.0  # monotonic

    def settle(self, exc: BaseException | None = None) -> None:
        """Let the handler return (or raise); a no-op if it is gone (cancelled on shutdown)."""
        if self.done.done():
            return
        if exc is None:
            self.done.set_result(None)
        else:
            self.done.set_exception(exc)


@dataclass
class JobResult:
    """What a window did to one job: its outcome (to deliver after commit) and when the latest
    of its events occurred."""

    outcome: Outcome
    occurred_at: datetime | None


@dataclass
class WindowResult:
    jobs: dict[uuid.UUID, JobResult] = field(default_factory=dict)
    # Events the window could not apply (missing or ended job): the per-event path takes them.
    leftover: list[int] = field(default_factory=list)


# --- set-based statements over every job of a window ---------------------------------------

_LOCK = "SELECT * FROM jobs WHERE job_id = ANY($1::uuid[]) ORDER BY job_id FOR UPDATE"

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


def _add(deltas: dict[uuid.UUID, Counts], job_id: uuid.UUID, delta: Counts) -> None:
    deltas[job_id] = deltas[job_id].plus(delta)


async def _write_pages_extracted(
    conn: asyncpg.Connection, events: list[PageExtracted], deltas: dict[uuid.UUID, Counts]
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
        [_clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_pending for e in evs],
        [_clean(e.error) for e in evs],
    )
    for row in rows:  # only the pages written first here (first write wins)
        ev = by_key[(row["job_id"], row["page"])]
        ocr = StageCount()
        if ev.ocr_pending:
            ocr = StageCount(1, int(row["ocred"]), int(row["ocred"] and row["ocr_failed"]))
        _add(
            deltas,
            ev.job_id,
            Counts(
                extract=StageCount(0, 1, int(ev.error is not None)),
                ocr=ocr,
                analyze=StageCount(ev.chunks_total, 0, 0),
            ),
        )


async def _write_pages_ocred(
    conn: asyncpg.Connection, events: list[PageOcred], deltas: dict[uuid.UUID, Counts]
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
        [_clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_seconds for e in evs],
        [_clean(e.error) for e in evs],
    )
    for row in rows:
        ev = by_key[(row["job_id"], row["page"])]
        ocr = StageCount(0, 1, int(ev.error is not None)) if row["awaited"] else StageCount()
        _add(deltas, ev.job_id, Counts(ocr=ocr, analyze=StageCount(ev.chunks_total, 0, 0)))


async def _write_chunks_analyzed(
    conn: asyncpg.Connection, events: list[ChunksAnalyzed], deltas: dict[uuid.UUID, Counts]
) -> None:
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
        [_clean(i.chunk.text) for _, i in rows_in],
        [json.dumps(_clean(i.analysis.model_dump(mode="json"))) for _, i in rows_in],
        [i.analysis.cost_usd for _, i in rows_in],
        [e.occurred_at for e, _ in rows_in],
    )
    for row in rows:
        _add(deltas, row["job_id"], Counts(analyze=StageCount(0, 1, 0)))


async def _move_counts(
    conn: asyncpg.Connection, job_ids: list[uuid.UUID], deltas: dict[uuid.UUID, Counts]
) -> dict[uuid.UUID, Counts]:
    """The counters of every job after the window: moved set-based where they moved, read
    set-based where not."""
    moved = [j for j in job_ids if deltas[j].nonzero]
    still = [j for j in job_ids if not deltas[j].nonzero]
    rows: list[asyncpg.Record] = []
    if moved:
        ids, stages, totals, dones, faileds = [], [], [], [], []
        for j in moved:  # job_ids is sorted: rows are locked in a stable order
            for s in STAGES:
                part = getattr(deltas[j], s)
                ids.append(j)
                stages.append(s)
                totals.append(part.total)
                dones.append(part.done)
                faileds.append(part.failed)
        rows += await conn.fetch(_ADD_COUNTS, ids, stages, totals, dones, faileds)
    if still:
        rows += await conn.fetch(_READ_COUNTS, still)
    grouped: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in job_ids}
    for row in rows:
        grouped[row["job_id"]].append(row)
    return {j: _counts_of(r) for j, r in grouped.items()}


async def apply_window(conn: asyncpg.Connection, events: list[Event]) -> WindowResult:
    """Apply ordinary events of any jobs in the caller's transaction, set-based; at most one
    snapshot per job. Events whose job is missing or ended are left over (by index) for the
    per-event path."""
    result = WindowResult()
    wanted = sorted({e.job_id for e in events})
    rows = {r["job_id"]: r for r in await conn.fetch(_LOCK, wanted)}
    live: list[Event] = []
    for i, ev in enumerate(events):
        row = rows.get(ev.job_id)
        if row is None or row["status"] in TERMINAL:
            result.leftover.append(i)
        else:
            live.append(ev)
    job_ids = sorted({e.job_id for e in live})
    if not job_ids:
        return result

    deltas: dict[uuid.UUID, Counts] = {j: Counts() for j in job_ids}
    pages = [e for e in live if isinstance(e, PageExtracted)]
    pages += [p for e in live if isinstance(e, PagesExtracted) for p in e.pages]
    if pages:
        await _write_pages_extracted(conn, pages, deltas)
    ocred = [e for e in live if isinstance(e, PageOcred)]
    if ocred:
        await _write_pages_ocred(conn, ocred, deltas)
    chunks = [e for e in live if isinstance(e, ChunksAnalyzed)]
    if chunks:
        await _write_chunks_analyzed(conn, chunks, deltas)

    states = {j: JobState.of(rows[j]) for j in job_ids}
    activity: set[uuid.UUID] = set()
    latest: dict[uuid.UUID, datetime] = {}
    for ev in live:
        state = states[ev.job_id]
        if state.status == "queued":
            state.status = "processing"
        at = latest.get(ev.job_id)
        latest[ev.job_id] = ev.occurred_at if at is None else max(at, ev.occurred_at)
        match ev:
            case ExtractionStarted():
                state.format = state.format or ev.format
                if state.pages_total is None:
                    state.pages_total = ev.pages_total
                    _add(deltas, ev.job_id, Counts(extract=StageCount(ev.pages_total, 0, 0)))
                state.started_at = state.started_at or ev.occurred_at
            case ImagesExtracted():
                activity.add(ev.job_id)

    counts = await _move_counts(conn, job_ids, deltas)
    now = _utcnow()
    saves: list[tuple[Any, ...]] = []
    inserts: list[tuple[Any, ...]] = []
    outcomes = {j: Outcome() for j in job_ids}
    moved_counts = dict(counts)  # the counters as the window's events moved them
    # Every job of the window that may have completed, completed together (set-based).
    counts.update(
        await complete_many(
            conn,
            [
                (rows[j], states[j], counts[j], outcomes[j])
                for j in job_ids
                if states[j].status == "processing"
            ],
        )
    )
    for j in job_ids:
        row, state, delta = rows[j], states[j], deltas[j]
        moved = delta.nonzero or j in activity or state != JobState.of(row)
        if moved:
            state.stalled = False
        job_counts = counts[j]
        old_counts = moved_counts[j].minus(delta)
        outcome = outcomes[j]
        if row["status"] == "queued" and not row["first_progress_at"]:
            outcome.first_progress_seconds = max(0.0, (now - row["created_at"]).total_seconds())
        args, update = plan_save(row, state, job_counts, old_counts, moved=moved, now=now)
        if args is not None:
            saves.append(args)
        if update is not None:
            inserts.append((j, update["seq"], update, now))
            outcome.updates.append(update)
        result.jobs[j] = JobResult(outcome, latest.get(j))
    if saves:
        await conn.executemany(SAVE_JOB, saves)
    if inserts:
        await conn.executemany(INSERT_UPDATE, inserts)
    return result


class WindowBatcher:
    """Collects events of every job for `window` seconds (or `max_batch` events) and applies
    them as one window; windows are applied one at a time, in arrival order, so one job's
    updates are committed and pushed in seq order.

    After commit the window's updates are pushed at once; what may wait (follow-up publishes
    with their confirms, metrics reads) runs in a task of its own while the next window is
    applied, and only then are the window's messages settled (acked), so a follow-up is never
    lost. Awaiting them in the worker held every other job's updates back: 100 jobs
    completing in one window cost ~0.3 s of confirms one after another."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        push: Push,
        follow_up: FollowUp,
        *,
        window: float,
        max_batch: int,
        retries: int,
    ) -> None:
        self.pool = pool
        self.push = push
        self.follow_up = follow_up
        self._follow_ups: set[asyncio.Task[None]] = set()
        self.window = window
        self.max_batch = max(1, max_batch)
        self.retries = retries
        self._pending: list[_Item] = []
        self._wake = asyncio.Event()  # something is pending
        self._full = asyncio.Event()  # a whole batch is pending
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # applied windows, for tests and benchmarks
        self.events = 0

    async def submit(self, event: Event, delivery: Delivery) -> None:
        """Returns once the event is committed and its update pushed; raises what the
        per-event path raised for it."""
        if not isinstance(event, BATCHABLE) or delivery.attempt > 0:
            # Retried messages go alone: their retry bookkeeping is per message.
            await self._apply_one(event, delivery)
            return
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            # A context of its own: not the first message's (job_id, message_id) bindings.
            self._worker = loop.create_task(
                self._run(), name="progress-window", context=contextvars.Context()
            )
        item = _Item(event, delivery, loop.create_future(), time.monotonic())
        if not self._pending:
            self._wake.set()
        self._pending.append(item)
        if len(self._pending) >= self.max_batch:
            self._full.set()
        await item.done

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        # Follow-ups in flight finish (their messages are then acked); unacked ones redeliver.
        await asyncio.gather(*self._follow_ups, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._pending:
                self._wake.clear()
                continue
            # The window runs from the oldest pending event's arrival: after a long flush
            # what arrived meanwhile goes at once.
            remaining = self._pending[0].arrived + self.window - time.monotonic()
            if remaining > 0 and len(self._pending) < self.max_batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            batch = self._pending[: self.max_batch]
            self._pending = self._pending[self.max_batch :]
            self._full.clear()
            if len(self._pending) >= self.max_batch:
                self._full.set()
            elif not self._pending:
                self._wake.clear()
            try:
                await self._flush(batch)
            except Exception as exc:  # never lose the worker; fail the window's messages
                log.exception("progress window failed")
                for item in batch:
                    item.settle(exc)

    async def _flush(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                result = await apply_window(conn, [i.event for i in batch])
        except Exception as exc:
            log.warning("window failed; applying its events one by one", error=repr(exc)[:300])
            await self._one_by_one(batch)
            return
        self.batches += 1
        self.events += len(batch) - len(result.leftover)
        for job in result.jobs.values():
            self.push(job.outcome, job.occurred_at)
        leftover = set(result.leftover)
        applied = [item for i, item in enumerate(batch) if i not in leftover]
        task = asyncio.create_task(self._follow_up_and_settle(result.jobs, applied))
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)
        if leftover:
            await self._one_by_one([batch[i] for i in sorted(leftover)])
        WINDOW_SECONDS.observe(time.perf_counter() - started)
        WINDOW_EVENTS.observe(len(batch))
        log.debug(
            "progress window applied",
            messages=len(batch) - len(leftover),
            jobs=len(result.jobs),
            leftover=len(leftover),
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )

    async def _follow_up_and_settle(
        self, jobs: dict[uuid.UUID, JobResult], items: list[_Item]
    ) -> None:
        ids = list(jobs)
        try:
            outcomes = await asyncio.gather(
                *(self.follow_up(jobs[j].outcome) for j in ids), return_exceptions=True
            )
            # A failed follow-up (a publish): that job's messages are retried, which re-sends it.
            failed = {j: r for j, r in zip(ids, outcomes, strict=True) if isinstance(r, Exception)}
            for item in items:
                item.settle(failed.get(item.event.job_id))
        finally:
            # Never leave a message waiting: whatever went wrong above, it is retried.
            for item in items:
                item.settle(RuntimeError("the window's follow-up did not finish"))

    async def _one_by_one(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.done.done():
                continue
            try:
                await self._apply_one(item.event, item.delivery)
            except Exception as exc:
                item.settle(exc)
            else:
                item.settle()

    async def _apply_one(self, event: Event, delivery: Delivery) -> None:
        outcome = await apply_event(
            self.pool,
            event,
            last_attempt=delivery.attempt >= self.retries,
            redelivered=delivery.redelivered or delivery.attempt > 0,
        )
        self.push(outcome, event.occurred_at)
        await self.follow_up(outcome)
