"""The database side of progress: apply one event to a job in one transaction.

Each event locks its job row (so events of one job serialise), writes its per-item row with
first-write-wins semantics, moves the per-stage counters by exactly what that write changed
(a duplicate changes nothing), and records a snapshot in job_updates when what a client sees
changed. Counters are recounted from the item rows (set-based) before a job is declared
complete, so completion never rests on arithmetic drift.

Nothing here talks to the bus or the hub: callers push `Outcome.updates` and publish
`Outcome.publish` after the transaction has committed.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.progress.arithmetic import (
    TERMINAL,
    Counts,
    StageCount,
    build_snapshot,
    is_complete,
    next_percent,
    snapshot_content,
    stage_name,
)
from services.progress.result import assemble_result, finished_at_of
from shared.errors import JobGone
from shared.events import (
    ChunksAnalyzed,
    DocumentUploaded,
    Event,
    ExtractionAccepted,
    ExtractionStarted,
    ImagesExtracted,
    JobCancelled,
    JobCompleted,
    JobFailed,
    PageExtracted,
    PageOcred,
    PagesExtracted,
)
from shared.jobs import ensure_job


class JobNotFoundYet(Exception):
    """The event overtook its job's creation; the bus retries it later."""


@dataclass
class Outcome:
    updates: list[dict[str, Any]] = field(default_factory=list)  # push after commit
    publish: list[Event] = field(default_factory=list)  # publish after commit
    # Set when this event moved the job out of 'queued' for the first time (for metrics).
    first_progress_seconds: float | None = None


@dataclass
class JobState:
    """The job columns progress writes."""

    status: str
    stage: str
    percent: float
    format: str | None
    pages_total: int | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    partial: bool
    stalled: bool

    @classmethod
    def of(cls, row: asyncpg.Record) -> JobState:
        return cls(
            status=row["status"],
            stage=row["stage"],
            percent=round(float(row["percent"]), 1),
            format=row["format"],
            pages_total=row["pages_total"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            error=row["error"],
            partial=row["partial"],
            stalled=row["stalled"],
        )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _clean(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


# --- reads ------------------------------------------------------------------------------

JOB_FOR_UPDATE = "SELECT * FROM jobs WHERE job_id = $1 FOR UPDATE"


async def read_counts(conn: asyncpg.Connection, job_id: uuid.UUID) -> Counts:
    rows = await conn.fetch(
        "SELECT stage, total, done, failed FROM job_progress WHERE job_id = $1", job_id
    )
    return _counts_of(rows)


def _counts_of(rows: list[asyncpg.Record]) -> Counts:
    return Counts.from_mapping(
        {r["stage"]: StageCount(r["total"], r["done"], r["failed"]) for r in rows}
    )


def snapshot_of(
    row: asyncpg.Record | dict[str, Any], counts: Counts, *, now: datetime | None = None
) -> dict[str, Any]:
    """The snapshot a job row and its counters describe (seq as stored)."""
    return build_snapshot(
        job_id=str(row["job_id"]),
        seq=row["seq"],
        status=row["status"],
        stage=row["stage"],
        percent=float(row["percent"]),
        counts=counts,
        pages_total=row["pages_total"],
        stalled=row["stalled"],
        error=row["error"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        now=now,
    )


async def latest_snapshot(conn: asyncpg.Connection, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The last update pushed, or (before any) one computed from the job row with seq 0."""
    payload = await conn.fetchval(
        "SELECT payload FROM job_updates WHERE job_id = $1 ORDER BY seq DESC LIMIT 1", job_id
    )
    if payload is not None:
        return payload
    row = await conn.fetchrow("SELECT * FROM jobs WHERE job_id = $1", job_id)
    if row is None:
        return None
    return {**snapshot_of(row, await read_counts(conn, job_id), now=_utcnow()), "seq": 0}


async def updates_after(
    conn: asyncpg.Connection | asyncpg.Pool, job_id: uuid.UUID, after: int
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT payload FROM job_updates WHERE job_id = $1 AND seq > $2 ORDER BY seq",
        job_id,
        after,
    )
    return [r["payload"] for r in rows]


# --- counters -----------------------------------------------------------------------------

_ADD_COUNTS = """
INSERT INTO job_progress (job_id, stage, total, done, failed)
SELECT $1, s.stage, s.total, s.done, s.failed
FROM unnest($2::text[], $3::int[], $4::int[], $5::int[]) AS s(stage, total, done, failed)
ON CONFLICT (job_id, stage) DO UPDATE SET
    total = job_progress.total + EXCLUDED.total,
    done = job_progress.done + EXCLUDED.done,
    failed = job_progress.failed + EXCLUDED.failed,
    updated_at = now()
RETURNING stage, total, done, failed
"""


async def add_counts(conn: asyncpg.Connection, job_id: uuid.UUID, delta: Counts) -> Counts:
    """Move the counters by `delta` and return their new values (one statement)."""
    stages = ("extract", "ocr", "analyze")
    parts = [getattr(delta, s) for s in stages]
    rows = await conn.fetch(
        _ADD_COUNTS,
        job_id,
        list(stages),
        [p.total for p in parts],
        [p.done for p in parts],
        [p.failed for p in parts],
    )
    return _counts_of(rows)


# Every counter of each job, recomputed from the item rows, and stored (set-based: one
# statement for all the jobs a window completes).
_RECOUNT = """
WITH j AS (
    SELECT * FROM unnest($1::uuid[], $2::int[]) AS j(job_id, pages_total)
), p AS (
    SELECT
        job_id,
        count(*) FILTER (WHERE extracted_at IS NOT NULL) AS ex_done,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND error IS NOT NULL) AS ex_failed,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending) AS ocr_total,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending
                         AND ocred_at IS NOT NULL) AS ocr_done,
        count(*) FILTER (WHERE extracted_at IS NOT NULL AND ocr_pending
                         AND ocred_at IS NOT NULL AND ocr_error IS NOT NULL) AS ocr_failed,
        coalesce(sum(text_chunks) FILTER (WHERE extracted_at IS NOT NULL), 0)
          + coalesce(sum(ocr_chunks) FILTER (WHERE ocred_at IS NOT NULL), 0) AS an_total
    FROM job_pages WHERE job_id = ANY($1::uuid[]) GROUP BY job_id
), c AS (
    SELECT job_id, count(*) AS an_done FROM job_chunks
    WHERE job_id = ANY($1::uuid[]) GROUP BY job_id
), x AS (
    SELECT j.job_id, j.pages_total,
           coalesce(p.ex_done, 0) AS ex_done, coalesce(p.ex_failed, 0) AS ex_failed,
           coalesce(p.ocr_total, 0) AS ocr_total, coalesce(p.ocr_done, 0) AS ocr_done,
           coalesce(p.ocr_failed, 0) AS ocr_failed, coalesce(p.an_total, 0) AS an_total,
           coalesce(c.an_done, 0) AS an_done
    FROM j LEFT JOIN p USING (job_id) LEFT JOIN c USING (job_id)
)
INSERT INTO job_progress (job_id, stage, total, done, failed)
SELECT job_id, 'extract', pages_total, ex_done, ex_failed FROM x
UNION ALL SELECT job_id, 'ocr', ocr_total, ocr_done, ocr_failed FROM x
UNION ALL SELECT job_id, 'analyze', an_total, an_done, 0 FROM x
ON CONFLICT (job_id, stage) DO UPDATE SET
    total = EXCLUDED.total, done = EXCLUDED.done, failed = EXCLUDED.failed, updated_at = now()
RETURNING job_id, stage, total, done, failed
"""


async def recount_many(
    conn: asyncpg.Connection, jobs: list[tuple[uuid.UUID, int | None]]
) -> dict[uuid.UUID, Counts]:
    """Recompute and store every counter of each (job_id, pages_total), in one statement."""
    rows = await conn.fetch(
        _RECOUNT, [j for j, _ in jobs], [pages_total or 0 for _, pages_total in jobs]
    )
    grouped: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j, _ in jobs}
    for row in rows:
        grouped[row["job_id"]].append(row)
    return {j: _counts_of(r) for j, r in grouped.items()}


# --- item writes: each returns the counter delta its first write causes ------------------

_PAGE_EXTRACTED = """
INSERT INTO job_pages AS p (job_id, page, extracted_at, has_text_layer, text, text_chunks,
                            ocr_pending, error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (job_id, page) DO UPDATE SET
    extracted_at = EXCLUDED.extracted_at, has_text_layer = EXCLUDED.has_text_layer,
    text = EXCLUDED.text, text_chunks = EXCLUDED.text_chunks,
    ocr_pending = EXCLUDED.ocr_pending, error = EXCLUDED.error
WHERE p.extracted_at IS NULL
RETURNING p.ocred_at IS NOT NULL AS ocred, p.ocr_error IS NOT NULL AS ocr_failed
"""

_PAGE_OCRED = """
INSERT INTO job_pages AS p (job_id, page, ocred_at, ocr_text, ocr_chunks, ocr_seconds, ocr_error)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (job_id, page) DO UPDATE SET
    ocred_at = EXCLUDED.ocred_at, ocr_text = EXCLUDED.ocr_text,
    ocr_chunks = EXCLUDED.ocr_chunks, ocr_seconds = EXCLUDED.ocr_seconds,
    ocr_error = EXCLUDED.ocr_error
WHERE p.ocred_at IS NULL
RETURNING p.extracted_at IS NOT NULL AND coalesce(p.ocr_pending, false) AS awaited
"""

_CHUNK_ANALYZED = """
INSERT INTO job_chunks (chunk_id, job_id, page, source, idx, start_offset, end_offset, text,
                        analysis, cost_usd, analyzed_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT DO NOTHING
"""


async def _page_extracted(conn: asyncpg.Connection, ev: PageExtracted) -> Counts:
    row = await conn.fetchrow(
        _PAGE_EXTRACTED,
        ev.job_id,
        ev.page,
        ev.occurred_at,
        ev.has_text_layer,
        _clean(ev.text),
        ev.chunks_total,
        ev.ocr_pending,
        _clean(ev.error),
    )
    if row is None:  # already extracted: first write won
        return Counts()
    ocr = StageCount()
    if ev.ocr_pending:
        ocr = StageCount(1, int(row["ocred"]), int(row["ocred"] and row["ocr_failed"]))
    return Counts(
        extract=StageCount(0, 1, int(ev.error is not None)),
        ocr=ocr,
        analyze=StageCount(ev.chunks_total, 0, 0),
    )


async def _page_ocred(conn: asyncpg.Connection, ev: PageOcred) -> Counts:
    row = await conn.fetchrow(
        _PAGE_OCRED,
        ev.job_id,
        ev.page,
        ev.occurred_at,
        _clean(ev.text),
        ev.chunks_total,
        ev.ocr_seconds,
        _clean(ev.error),
    )
    if row is None:
        return Counts()
    ocr = StageCount(0, 1, int(ev.error is not None)) if row["awaited"] else StageCount()
    return Counts(ocr=ocr, analyze=StageCount(ev.chunks_total, 0, 0))


async def _chunks_analyzed(conn: asyncpg.Connection, ev: ChunksAnalyzed) -> Counts:
    """Each chunk counts once, whichever message brought it first (first write wins)."""
    inserted = 0
    for item in ev.items:
        chunk = item.chunk
        status = await conn.execute(
            _CHUNK_ANALYZED,
            chunk.chunk_id,
            ev.job_id,
            chunk.page,
            chunk.source.value,
            chunk.index,
            chunk.start,
            chunk.end,
            _clean(chunk.text),
            _clean(item.analysis.model_dump(mode="json")),
            item.analysis.cost_usd,
            ev.occurred_at,
        )
        inserted += int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
    return Counts(analyze=StageCount(0, inserted, 0))


# --- job writes ---------------------------------------------------------------------------

SAVE_JOB = """
UPDATE jobs SET
    status = $2, stage = $3, percent = $4, format = $5, pages_total = $6, started_at = $7,
    finished_at = $8, error = $9, partial = $10, stalled = $11, seq = $12,
    updated_at = $13,
    first_progress_at = CASE WHEN $2 <> 'queued' THEN coalesce(first_progress_at, $13)
                             ELSE first_progress_at END
WHERE job_id = $1
"""


def plan_save(
    row: asyncpg.Record,
    state: JobState,
    counts: Counts,
    old_counts: Counts,
    *,
    moved: bool,
    now: datetime,
    force: bool = False,
) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
    """What save_job writes, without writing it: the SAVE_JOB arguments (None: nothing to
    write) and the next update (None: what a client sees did not change). Lets a batch write
    many jobs with one executemany."""
    state.stage = stage_name(state.status, state.pages_total, counts)
    state.percent = next_percent(state.status, state.percent, state.pages_total, counts)
    old = snapshot_of(row, old_counts)
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
    )
    changed = force or row["seq"] == 0 or snapshot_content(old) != snapshot_content(new)
    if not changed and not moved:
        return None, None
    args = (
        row["job_id"],
        state.status,
        state.stage,
        state.percent,
        state.format,
        state.pages_total,
        state.started_at,
        state.finished_at,
        state.error,
        state.partial,
        state.stalled,
        row["seq"] + 1 if changed else row["seq"],
        now,
    )
    return args, (new if changed else None)


INSERT_UPDATE = "INSERT INTO job_updates (job_id, seq, payload, created_at) VALUES ($1, $2, $3, $4)"


async def save_job(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    state: JobState,
    counts: Counts,
    old_counts: Counts,
    *,
    moved: bool,
    now: datetime,
    force: bool = False,
) -> dict[str, Any] | None:
    """Write the job's new state; when what a client sees changed, record the next update and
    return it (to push after commit)."""
    args, new = plan_save(row, state, counts, old_counts, moved=moved, now=now, force=force)
    if args is None:
        return None
    await conn.execute(SAVE_JOB, *args)
    if new is None:
        return None
    await conn.execute(INSERT_UPDATE, row["job_id"], new["seq"], new, now)
    return new


async def _store_results(
    conn: asyncpg.Connection,
    jobs: list[tuple[asyncpg.Record, JobState]],
    *,
    status: str,
    partial: bool,
    finished_at: datetime | None = None,
) -> dict[uuid.UUID, tuple[dict[str, Any], int]]:
    """Assemble and store the result of each job (items read and results written set-based,
    whatever the number of jobs); returns each job's result and chunk count."""
    ids = [row["job_id"] for row, _ in jobs]
    pages: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in ids}
    chunks: dict[uuid.UUID, list[asyncpg.Record]] = {j: [] for j in ids}
    for r in await conn.fetch("SELECT * FROM job_pages WHERE job_id = ANY($1::uuid[])", ids):
        pages[r["job_id"]].append(r)
    for r in await conn.fetch("SELECT * FROM job_chunks WHERE job_id = ANY($1::uuid[])", ids):
        chunks[r["job_id"]].append(r)
    out: dict[uuid.UUID, tuple[dict[str, Any], int]] = {}
    for row, state in jobs:
        j = row["job_id"]
        end = finished_at or finished_at_of(state.started_at, pages[j], chunks[j])
        state.finished_at = state.finished_at or end or row["created_at"]
        job = {**dict(row), "format": state.format, "pages_total": state.pages_total,
               "started_at": state.started_at}  # fmt: skip
        result = assemble_result(
            job, pages[j], chunks[j], status=status, finished_at=state.finished_at,
            partial=partial,
        )  # fmt: skip
        out[j] = (result, len(chunks[j]))
    await conn.executemany(
        "INSERT INTO job_results (job_id, result) VALUES ($1, $2) ON CONFLICT (job_id) DO NOTHING",
        [(j, result) for j, (result, _) in out.items()],
    )
    return out


async def _store_result(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    state: JobState,
    *,
    status: str,
    partial: bool,
    finished_at: datetime | None = None,
) -> tuple[dict[str, Any], int]:
    """Assemble and store the job's result; returns it and its chunk count."""
    stored = await _store_results(
        conn, [(row, state)], status=status, partial=partial, finished_at=finished_at
    )
    return stored[row["job_id"]]


def _completed_event(
    row: asyncpg.Record, pages_total: int, chunks_total: int, at: datetime
) -> JobCompleted:
    # occurred_at = finished_at, so a republished JobCompleted has the same body.
    return JobCompleted(
        job_id=row["job_id"],
        tenant=row["tenant"],
        pages_total=pages_total,
        chunks_total=chunks_total,
        occurred_at=at,
    )


# --- the entry point ----------------------------------------------------------------------

TERMINAL_EVENTS = (JobFailed, JobCancelled, JobCompleted)


async def apply_event(
    pool: asyncpg.Pool, event: Event, *, last_attempt: bool = False, redelivered: bool = False
) -> Outcome:
    """Apply one event in one transaction. Raises JobNotFoundYet when the job row does not
    exist yet (retry later); JobGone when a terminal event for an unknown job is on its last
    attempt (nothing can ever apply it). `redelivered`: the message was seen before (a retry or
    a broker redelivery), so follow-up events published after a lost first try are re-sent."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_in_transaction(
            conn, event, last_attempt=last_attempt, redelivered=redelivered
        )


async def apply_in_transaction(
    conn: asyncpg.Connection, event: Event, *, last_attempt: bool = False, redelivered: bool = False
) -> Outcome:
    if isinstance(event, DocumentUploaded):
        await ensure_job(conn, event)
    row = await conn.fetchrow(JOB_FOR_UPDATE, event.job_id)
    if row is None:
        if last_attempt and isinstance(event, TERMINAL_EVENTS):
            raise JobGone("the job does not exist")
        raise JobNotFoundYet(f"job {event.job_id} not found (yet) for {event.routing_key}")
    now = _utcnow()
    if row["status"] in TERMINAL:
        return await _settle_terminal(conn, row, event, now, redelivered=redelivered)

    state = JobState.of(row)
    delta = Counts()
    if state.status == "queued" and not isinstance(event, DocumentUploaded):
        state.status = "processing"
    match event:
        case ExtractionAccepted():
            state.format = state.format or event.format
        case ExtractionStarted():
            state.format = state.format or event.format
            if state.pages_total is None:
                state.pages_total = event.pages_total
                delta = Counts(extract=StageCount(event.pages_total, 0, 0))
            state.started_at = state.started_at or event.occurred_at
        case PageExtracted():
            delta = await _page_extracted(conn, event)
        case PagesExtracted():
            for page in event.pages:
                delta = delta.plus(await _page_extracted(conn, page))
        case PageOcred():
            delta = await _page_ocred(conn, event)
        case ChunksAnalyzed():
            delta = await _chunks_analyzed(conn, event)
        case JobFailed() if row["revived_at"] and event.occurred_at <= row["revived_at"]:
            pass  # a failure a dead-letter replay has since undone (a redelivered job.failed)
        case JobFailed():
            state.status = "failed"
            state.error = event.reason
            state.finished_at = state.finished_at or event.occurred_at
        case JobCancelled():
            state.status = "cancelled"
        case _:  # images.extracted, document.uploaded: activity only
            pass
    moved = delta.nonzero or isinstance(event, ImagesExtracted) or (state != JobState.of(row))
    if moved:
        state.stalled = False

    if delta.nonzero:
        counts = await add_counts(conn, row["job_id"], delta)
    else:
        counts = await read_counts(conn, row["job_id"])
    old_counts = counts.minus(delta)
    outcome = Outcome()
    if row["status"] == "queued" and state.status != "queued" and not row["first_progress_at"]:
        outcome.first_progress_seconds = max(0.0, (now - row["created_at"]).total_seconds())
    if state.status == "processing":
        counts = await complete_if_done(conn, row, state, counts, outcome)
    elif state.status == "cancelled":
        await _finish_cancelled(conn, row, state, event)

    update = await save_job(conn, row, state, counts, old_counts, moved=moved, now=now)
    if update is not None:
        outcome.updates.append(update)
    return outcome


async def _finish_cancelled(
    conn: asyncpg.Connection, row: asyncpg.Record, state: JobState, event: Event
) -> None:
    """Keep whatever was done: a partial result built from the pages and chunks so far."""
    state.status = "cancelled"
    state.partial = True
    at = event.occurred_at if isinstance(event, JobCancelled) else None
    await _store_result(conn, row, state, status="cancelled", partial=True, finished_at=at)


async def complete_if_done(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    state: JobState,
    counts: Counts,
    outcome: Outcome,
) -> Counts:
    """If the counts say the job is complete, confirm with a full recount (rare: once per
    job), store the result, mark it completed and queue JobCompleted; returns the counts."""
    done = await complete_many(conn, [(row, state, counts, outcome)])
    return done[row["job_id"]]


async def complete_many(
    conn: asyncpg.Connection,
    jobs: list[tuple[asyncpg.Record, JobState, Counts, Outcome]],
) -> dict[uuid.UUID, Counts]:
    """complete_if_done for several jobs at once, set-based: one recount, one read of the
    items and one write of the results for all the jobs a window completes (one by one, 40
    jobs completing together held a window for ~0.1 s). Returns each job's counts."""
    counts = {row["job_id"]: c for row, _, c, _ in jobs}
    candidates = [
        (row, state, outcome)
        for row, state, c, outcome in jobs
        if is_complete(state.pages_total, c)
    ]
    if not candidates:
        return counts
    recounted = await recount_many(
        conn, [(row["job_id"], state.pages_total) for row, state, _ in candidates]
    )
    counts.update(recounted)
    complete = [
        (row, state, outcome)
        for row, state, outcome in candidates
        if is_complete(state.pages_total, recounted[row["job_id"]])
    ]
    for _, state, _ in complete:
        state.status = "completed"
    stored = await _store_results(
        conn, [(row, state) for row, state, _ in complete], status="completed", partial=False
    )
    for row, state, outcome in complete:
        assert state.pages_total is not None and state.finished_at is not None
        outcome.publish.append(
            _completed_event(row, state.pages_total, stored[row["job_id"]][1], state.finished_at)
        )
    return counts


async def _settle_terminal(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    event: Event,
    now: datetime,
    *,
    redelivered: bool = False,
) -> Outcome:
    """A terminal job takes no more changes. If its status was set elsewhere (ingest cancels
    by writing the row) the final update may not exist yet: write and push it now."""
    status = row["status"]
    outcome = Outcome()
    # Settled once the last pushed update carries the terminal status (ingest writes
    # status and stage itself on cancel, so the row alone cannot tell).
    last_pushed = await conn.fetchval(
        "SELECT payload->>'status' FROM job_updates WHERE job_id = $1 ORDER BY seq DESC LIMIT 1",
        row["job_id"],
    )
    if last_pushed == status:
        if status == "completed" and redelivered and not isinstance(event, JobCompleted):
            # A retried message may be the one whose JobCompleted publish failed after commit:
            # announce again (same message id and body, so consumers see a duplicate).
            chunks = await conn.fetchval(
                "SELECT count(*) FROM job_chunks WHERE job_id = $1", row["job_id"]
            )
            outcome.publish.append(
                _completed_event(row, row["pages_total"] or 0, chunks, row["finished_at"] or now)
            )
        return outcome
    state = JobState.of(row)
    if status == "cancelled":
        await _finish_cancelled(conn, row, state, event)
    else:
        state.finished_at = state.finished_at or now
    counts = await read_counts(conn, row["job_id"])
    # The row may already read like the final snapshot (ingest wrote status, stage and error
    # on cancel), but no client has been told yet: record and push it regardless.
    update = await save_job(conn, row, state, counts, counts, moved=False, now=now, force=True)
    if update is not None:
        outcome.updates.append(update)
    return outcome


# --- stalls and deadlines -----------------------------------------------------------------

_CANDIDATES = """
SELECT job_id FROM jobs
WHERE status IN ('queued', 'processing')
  AND ((status = 'processing' AND NOT stalled AND updated_at < $1)
       OR coalesce(revived_at, created_at) < $2)
ORDER BY updated_at
LIMIT $3
"""

_LOCK_CANDIDATE = """
SELECT * FROM jobs
WHERE job_id = $1 AND status IN ('queued', 'processing')
  AND ((status = 'processing' AND NOT stalled AND updated_at < $2)
       OR coalesce(revived_at, created_at) < $3)
FOR UPDATE SKIP LOCKED
"""


def deadline_reason(deadline_seconds: float) -> str:
    return (
        f"The job did not finish within the {deadline_seconds:g}-second deadline and was stopped."
    )


async def sweep_stalls(
    pool: asyncpg.Pool,
    *,
    stall_seconds: float,
    deadline_seconds: float,
    batch: int = 100,
    now: datetime | None = None,
) -> Outcome:
    """Mark processing jobs without activity for stall_seconds as stalled, and fail jobs past
    their deadline. Jobs locked by an event in flight are skipped (they are moving)."""
    now = now or _utcnow()
    stall_before = now - timedelta(seconds=stall_seconds)
    deadline_before = now - timedelta(seconds=deadline_seconds)
    outcome = Outcome()
    ids = await pool.fetch(_CANDIDATES, stall_before, deadline_before, batch)
    for rec in ids:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(_LOCK_CANDIDATE, rec["job_id"], stall_before, deadline_before)
            if row is None:
                continue
            state = JobState.of(row)
            # A job revived by a dead-letter replay gets a fresh deadline.
            if (row["revived_at"] or row["created_at"]) < deadline_before:
                state = replace(
                    state,
                    status="failed",
                    error=deadline_reason(deadline_seconds),
                    finished_at=state.finished_at or now,
                )
                outcome.publish.append(
                    JobFailed(job_id=row["job_id"], stage="progress", reason=state.error or "")
                )
            else:
                state.stalled = True
            counts = await read_counts(conn, row["job_id"])
            update = await save_job(conn, row, state, counts, counts, moved=False, now=now)
            if update is not None:
                outcome.updates.append(update)
    return outcome
