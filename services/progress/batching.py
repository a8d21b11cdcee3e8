"""Batched progress: events of one job that arrive within a few milliseconds are applied in ONE
transaction (one row lock, one counter write, one job UPDATE, one job_updates row) and pushed
as one coalesced update.

Applying each event in its own transaction cost one UPDATE of the job row, one job_updates
insert and a WebSocket push per event; at a few hundred events per second of one job the row
lock serialised everything and the queue grew. Here the consumer's prefetch lets many messages
in at once; each handler call parks its event in the job's open batch and waits. When the
window closes (or the batch is full) the batch is applied; every handler then returns, so the
bus acks each message only after the commit (at-least-once is kept).

Correctness rests on what aggregate.py already guarantees per event: item writes are
first-write-wins (a duplicate moves no counter), so applying events together in any order
gives the same rows and counters as applying them one by one; percent only moves up
(next_percent) and seq grows by one per stored update. Anything unusual goes through the
per-event path unchanged: terminal and upload events, a job that is missing or already ended,
and, if a batch transaction fails, every event of that batch one by one (so each message gets
its own retry or dead-letter outcome from the bus).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from services.progress.aggregate import (
    JOB_FOR_UPDATE,
    JobState,
    Outcome,
    _clean,
    _completed_event,
    _page_ocred,
    _store_result,
    _utcnow,
    add_counts,
    apply_event,
    read_counts,
    recount_progress,
    save_job,
)
from services.progress.arithmetic import TERMINAL, Counts, StageCount, is_complete
from shared.bus import Delivery
from shared.events import (
    ChunkAnalyzed,
    ChunkCreated,
    Event,
    ExtractionStarted,
    ImagesExtracted,
    PageExtracted,
    PageOcred,
)

log = structlog.get_logger(__name__)

# Events that only move counters or mark activity: safe to apply together.
BATCHABLE = (
    ExtractionStarted,
    PageExtracted,
    PageOcred,
    ChunkAnalyzed,
    ChunkCreated,
    ImagesExtracted,
)

# app.deliver: push updates after commit and publish follow-ups; the datetime is when the
# (latest) event behind them occurred, for the push-lag metric.
Deliver = Callable[[Outcome, datetime | None], Awaitable[None]]


class NotBatchable(Exception):
    """The job's row says this batch needs the per-event path (missing or ended job)."""


@dataclass
class _Item:
    event: Event
    delivery: Delivery
    done: asyncio.Future[None]


# Set-based versions of aggregate's per-event item writes: one statement per kind per batch,
# same first-write-wins rules (duplicates within a batch are dropped before, so no row is
# touched twice by one statement).
_PAGES_EXTRACTED = """
INSERT INTO job_pages AS p (job_id, page, extracted_at, has_text_layer, text, text_chunks,
                            ocr_pending, error)
SELECT $1, s.page, s.at, s.htl, s.text, s.chunks, s.pending, s.error
FROM unnest($2::int[], $3::timestamptz[], $4::bool[], $5::text[], $6::int[], $7::bool[],
            $8::text[]) AS s(page, at, htl, text, chunks, pending, error)
ON CONFLICT (job_id, page) DO UPDATE SET
    extracted_at = EXCLUDED.extracted_at, has_text_layer = EXCLUDED.has_text_layer,
    text = EXCLUDED.text, text_chunks = EXCLUDED.text_chunks,
    ocr_pending = EXCLUDED.ocr_pending, error = EXCLUDED.error
WHERE p.extracted_at IS NULL
RETURNING p.page, p.ocred_at IS NOT NULL AS ocred, p.ocr_error IS NOT NULL AS ocr_failed
"""

_CHUNKS_ANALYZED = """
INSERT INTO job_chunks (chunk_id, job_id, page, source, idx, start_offset, end_offset, text,
                        analysis, cost_usd, analyzed_at)
SELECT s.chunk_id, $1, s.page, s.source, s.idx, s.start_offset, s.end_offset, s.text,
       s.analysis::jsonb, s.cost_usd, s.at
FROM unnest($2::uuid[], $3::int[], $4::text[], $5::int[], $6::int[], $7::int[], $8::text[],
            $9::text[], $10::float8[], $11::timestamptz[])
     AS s(chunk_id, page, source, idx, start_offset, end_offset, text, analysis, cost_usd, at)
ON CONFLICT DO NOTHING
RETURNING chunk_id
"""


async def _pages_extracted(
    conn: asyncpg.Connection, job_id: uuid.UUID, events: list[PageExtracted]
) -> Counts:
    by_page: dict[int, PageExtracted] = {}
    for ev in events:
        by_page.setdefault(ev.page, ev)  # a duplicate in the same batch changes nothing
    evs = list(by_page.values())
    rows = await conn.fetch(
        _PAGES_EXTRACTED,
        job_id,
        [e.page for e in evs],
        [e.occurred_at for e in evs],
        [e.has_text_layer for e in evs],
        [_clean(e.text) for e in evs],
        [e.chunks_total for e in evs],
        [e.ocr_pending for e in evs],
        [_clean(e.error) for e in evs],
    )
    delta = Counts()
    for row in rows:  # only the pages written first here (first write wins)
        ev = by_page[row["page"]]
        ocr = StageCount()
        if ev.ocr_pending:
            ocr = StageCount(1, int(row["ocred"]), int(row["ocred"] and row["ocr_failed"]))
        delta = delta.plus(
            Counts(
                extract=StageCount(0, 1, int(ev.error is not None)),
                ocr=ocr,
                analyze=StageCount(ev.chunks_total, 0, 0),
            )
        )
    return delta


async def _chunks_analyzed(
    conn: asyncpg.Connection, job_id: uuid.UUID, events: list[ChunkAnalyzed]
) -> Counts:
    by_id: dict[uuid.UUID, ChunkAnalyzed] = {}
    for ev in events:
        by_id.setdefault(ev.chunk.chunk_id, ev)
    evs = list(by_id.values())
    inserted = await conn.fetch(
        _CHUNKS_ANALYZED,
        job_id,
        [e.chunk.chunk_id for e in evs],
        [e.chunk.page for e in evs],
        [e.chunk.source.value for e in evs],
        [e.chunk.index for e in evs],
        [e.chunk.start for e in evs],
        [e.chunk.end for e in evs],
        [_clean(e.chunk.text) for e in evs],
        [json.dumps(_clean(e.analysis.model_dump(mode="json"))) for e in evs],
        [e.analysis.cost_usd for e in evs],
        [e.occurred_at for e in evs],
    )
    return Counts(analyze=StageCount(0, len(inserted), 0))


async def apply_job_batch(
    conn: asyncpg.Connection, job_id: uuid.UUID, events: list[Event]
) -> Outcome:
    """Apply ordinary events of one job in the caller's transaction; one snapshot at most."""
    row = await conn.fetchrow(JOB_FOR_UPDATE, job_id)
    if row is None or row["status"] in TERMINAL:
        raise NotBatchable("job missing or ended")
    state = JobState.of(row)
    if state.status == "queued":
        state.status = "processing"
    delta = Counts()
    activity = False
    pages = [e for e in events if isinstance(e, PageExtracted)]
    if pages:
        delta = delta.plus(await _pages_extracted(conn, job_id, pages))
    chunks = [e for e in events if isinstance(e, ChunkAnalyzed)]
    if chunks:
        delta = delta.plus(await _chunks_analyzed(conn, job_id, chunks))
    for event in events:
        match event:
            case ExtractionStarted():
                state.format = state.format or event.format
                if state.pages_total is None:
                    state.pages_total = event.pages_total
                    delta = delta.plus(Counts(extract=StageCount(event.pages_total, 0, 0)))
                state.started_at = state.started_at or event.occurred_at
            case PageOcred():
                delta = delta.plus(await _page_ocred(conn, event))
            case ChunkCreated() | ImagesExtracted():
                activity = True
    moved = delta.nonzero or activity or state != JobState.of(row)
    if moved:
        state.stalled = False
    counts = (
        await add_counts(conn, job_id, delta) if delta.nonzero else await read_counts(conn, job_id)
    )
    old_counts = counts.minus(delta)
    outcome = Outcome()
    now = _utcnow()
    if row["status"] == "queued" and not row["first_progress_at"]:
        outcome.first_progress_seconds = max(0.0, (now - row["created_at"]).total_seconds())
    if state.status == "processing" and is_complete(state.pages_total, counts):
        counts = await recount_progress(conn, job_id, state.pages_total)
        if is_complete(state.pages_total, counts):
            state.status = "completed"
            _, chunks_total = await _store_result(
                conn, row, state, status="completed", partial=False
            )
            assert state.pages_total is not None and state.finished_at is not None
            outcome.publish.append(
                _completed_event(row, state.pages_total, chunks_total, state.finished_at)
            )
    update = await save_job(conn, row, state, counts, old_counts, moved=moved, now=now)
    if update is not None:
        outcome.updates.append(update)
    return outcome


class JobBatcher:
    """Collects each job's events for `window` seconds (or `max_batch` events), then applies
    them together; batches of one job are applied one after another, in arrival order."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        deliver: Deliver,
        *,
        window: float,
        max_batch: int,
        retries: int,
    ) -> None:
        self.pool = pool
        self.deliver = deliver
        self.window = window
        self.max_batch = max_batch
        self.retries = retries
        self._open: dict[uuid.UUID, list[_Item]] = {}
        self._last: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.batches = 0  # applied batches, for tests and benchmarks
        self.events = 0

    async def submit(self, event: Event, delivery: Delivery) -> None:
        """Returns once the event is committed and its update pushed; raises what the
        per-event path raised for it."""
        if not isinstance(event, BATCHABLE) or delivery.attempt > 0:
            # Retried messages go alone: their retry bookkeeping is per message.
            await self._apply_one(event, delivery)
            return
        loop = asyncio.get_running_loop()
        item = _Item(event, delivery, loop.create_future())
        batch = self._open.get(event.job_id)
        if batch is None:
            batch = self._open[event.job_id] = []
            loop.call_later(self.window, self._close, event.job_id, batch)
        batch.append(item)
        if len(batch) >= self.max_batch:
            self._close(event.job_id, batch)
        await item.done

    def _close(self, job_id: uuid.UUID, batch: list[_Item]) -> None:
        if self._open.get(job_id) is not batch:
            return  # closed already (it filled up before its window ended)
        del self._open[job_id]
        previous = self._last.get(job_id)
        task = asyncio.create_task(self._flush(job_id, batch, previous))
        self._last[job_id] = task
        task.add_done_callback(lambda t: self._forget(job_id, t))

    def _forget(self, job_id: uuid.UUID, task: asyncio.Task[None]) -> None:
        if self._last.get(job_id) is task:
            del self._last[job_id]

    async def _flush(
        self, job_id: uuid.UUID, batch: list[_Item], previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            # Keep one job's batches in order: pushes then reach clients in seq order.
            await asyncio.gather(previous, return_exceptions=True)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                outcome = await apply_job_batch(conn, job_id, [i.event for i in batch])
        except Exception as exc:
            if not isinstance(exc, NotBatchable):
                log.warning("batch failed; applying its events one by one", error=repr(exc)[:300])
            await self._one_by_one(batch)
            return
        self.batches += 1
        self.events += len(batch)
        try:
            await self.deliver(outcome, batch[-1].event.occurred_at)
        except Exception as exc:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        for item in batch:
            if not item.done.done():
                item.done.set_result(None)

    async def _one_by_one(self, batch: list[_Item]) -> None:
        for item in batch:
            try:
                await self._apply_one(item.event, item.delivery)
            except Exception as exc:
                item.done.set_exception(exc)
            else:
                item.done.set_result(None)

    async def _apply_one(self, event: Event, delivery: Delivery) -> None:
        outcome = await apply_event(
            self.pool,
            event,
            last_attempt=delivery.attempt >= self.retries,
            redelivered=delivery.redelivered or delivery.attempt > 0,
        )
        await self.deliver(outcome, event.occurred_at)
