"""The window loop: events of ALL jobs arriving within a few milliseconds (or until
`max_batch` of them) form one window, applied by window.apply_window in one transaction.

Windows are applied one after another by a single worker: while one window is applied the
next one fills, so under load a window holds whatever arrived meanwhile and the cost per
event falls as the rate rises. One job's updates are therefore committed and pushed in seq
order. After commit the window's updates are pushed at once; what may wait (follow-up
publishes with their confirms, metrics reads) runs in a task of its own while the next window
is applied, and only then are the window's messages settled (acked), so a follow-up is never
lost.

Terminal events, uploads and retried messages go as windows of one, beside the worker. If a
window's transaction fails, each of its events goes again as a window of one, so each
message gets its own retry or dead-letter outcome from the bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog
from prometheus_client import Histogram

from services.progress.models import Outcome
from services.progress.window import Incoming, JobResult, apply_window
from shared.bus import Delivery
from shared.events import (
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

# Events that only move counters or mark activity: safe to apply together in one window
# (matched by exact type, a set lookup per message rather than ABC isinstance checks).
BATCHABLE: frozenset[type[Event]] = frozenset(
    {ExtractionStarted, PageExtracted, PagesExtracted, PageOcred, ChunksAnalyzed, ImagesExtracted}
)

# push: push updates after commit (never waits); the datetime is when the (latest) event
# behind them occurred, for the push-lag metric. follow_up: what may wait after the push
# (metrics read from the database, follow-up events published with confirms).
Push = Callable[[Outcome, datetime | None], None]
FollowUp = Callable[[Outcome], Awaitable[None]]


@dataclass
class _Item:
    incoming: Incoming
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


class WindowBatcher:
    """Collects events of every job for `window` seconds (or `max_batch` events) and applies
    them as one window, one window at a time, in arrival order."""

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

    def incoming(self, event: Event, delivery: Delivery) -> Incoming:
        return Incoming(
            event,
            redelivered=delivery.redelivered or delivery.attempt > 0,
            last_attempt=delivery.attempt >= self.retries,
        )

    async def submit(self, event: Event, delivery: Delivery) -> None:
        """Returns once the event is committed and its update pushed; raises what applying
        it raised (JobNotFoundYet, JobGone, a database error)."""
        incoming = self.incoming(event, delivery)
        if type(event) not in BATCHABLE or delivery.attempt > 0:
            # Retried messages go alone: their retry bookkeeping is per message.
            await self._apply_alone(incoming)
            return
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            # A context of its own: not the first message's (job_id, message_id) bindings.
            self._worker = loop.create_task(
                self._run(), name="progress-window", context=contextvars.Context()
            )
        item = _Item(incoming, loop.create_future(), time.monotonic())
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

    async def _next_window(self) -> list[_Item]:
        while not self._pending:
            self._wake.clear()
            await self._wake.wait()
        # The window runs from the oldest pending event's arrival: after a long flush what
        # arrived meanwhile goes at once.
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
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_window()
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
                result = await apply_window(conn, [i.incoming for i in batch])
        except Exception as exc:
            log.warning("window failed; applying its events one by one", error=repr(exc)[:300])
            await self._one_by_one(batch)
            return
        self.batches += 1
        self.events += len(batch) - len(result.errors)
        for job in result.jobs.values():
            self.push(job.outcome, job.occurred_at)
        for i, error in result.errors.items():
            batch[i].settle(error)
        applied = [item for i, item in enumerate(batch) if i not in result.errors]
        task = asyncio.create_task(self._follow_up_and_settle(result.jobs, applied))
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)
        WINDOW_SECONDS.observe(time.perf_counter() - started)
        WINDOW_EVENTS.observe(len(batch))
        log.debug(
            "progress window applied",
            messages=len(batch) - len(result.errors),
            jobs=len(result.jobs),
            refused=len(result.errors),
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
                item.settle(failed.get(item.incoming.event.job_id))
        finally:
            # Never leave a message waiting: whatever went wrong above, it is retried.
            for item in items:
                item.settle(RuntimeError("the window's follow-up did not finish"))

    async def _one_by_one(self, batch: list[_Item]) -> None:
        for item in batch:
            if item.done.done():
                continue
            try:
                await self._apply_alone(item.incoming)
            except Exception as exc:
                item.settle(exc)
            else:
                item.settle()

    async def _apply_alone(self, incoming: Incoming) -> None:
        """A window of one, beside the worker; raises what the event's window reported."""
        async with self.pool.acquire() as conn, conn.transaction():
            result = await apply_window(conn, [incoming])
        job = result.jobs.get(incoming.event.job_id)
        if job is not None:
            self.push(job.outcome, incoming.event.occurred_at)
        if 0 in result.errors:
            raise result.errors[0]
        if job is not None:
            await self.follow_up(job.outcome)
