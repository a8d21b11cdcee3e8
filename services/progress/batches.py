"""Pure batch rules: a batch's aggregate from its jobs' sums, its status, its percent (weighted
by pages, never decreasing), its ETA, and the messages of the batch stream. No I/O here; the
SQL is in store/batches.py and the hook that runs it after each window in batch_refresh.py.

A batch's status: `queued` until one of its jobs moves; `processing` while any job has not
ended; once every job has ended, `completed` if at least one job completed (the counts tell
the failed and cancelled ones: a batch of 200 with 3 failures is a completed batch with
`jobs_failed: 3`), else `cancelled` if the batch's cancel was requested or a job was
cancelled, else `failed` (every job failed). A batch whose cancel was requested and that has
cancelled jobs ends `cancelled` even when some of its jobs completed before the cancel.

Percent and ETA come from the model that gives a job its own (costmodel.py): each job's
expected work per stage, from its counters and the learned costs of its format, summed over
the batch (costmodel.batch_stage_work: a job not sized yet counts as the typical sized one,
an ended job's work is all done, failed and cancelled work is over too). Percent is the share
of that work done; it never decreases (a job learning that it has 300 pages would otherwise
pull the batch back), stays at most 99 until every job has ended, and is 100 then. The ETA is
the batch's bottleneck: the slowest of its work left, and of each stage's, at the pace kept
since the batch was created (costmodel.bottleneck_eta_seconds).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from functools import lru_cache
from typing import Any, TypedDict

from services.progress.arithmetic import Snapshot
from services.progress.costmodel import (
    BOOK,
    NO_WORK,
    CostBook,
    FormatCosts,
    StageWork,
    Work,
    bottleneck_eta_seconds,
    cost_key,
    job_stage_work,
)
from shared.events import TERMINAL_STATUSES, JobStatus

# The percent shown before every job has ended, at most (the job rule too).
UNFINISHED_CAP = 99.0


class BatchMessage(TypedDict):
    """An aggregate message (`"type": "batch"`): the JSON form of shared.events.BatchSnapshot,
    as a plain dict (built per window, never validated on the hot path)."""

    type: str
    batch_id: str
    seq: int
    status: JobStatus
    jobs_total: int
    jobs_queued: int
    jobs_running: int
    jobs_completed: int
    jobs_failed: int
    jobs_cancelled: int
    pages_done: int
    pages_total: int
    percent: float
    eta_seconds: int | None
    cost_usd: float
    updated_at: str | None
    final: bool


class JobMessage(TypedDict):
    """A job's change on the batch stream: shared.events.BatchJobMessage."""

    type: str
    batch_id: str
    seq: int
    job: Snapshot


StreamMessage = BatchMessage | JobMessage


@dataclass(frozen=True)
class JobCounts:
    """How many of a batch's jobs stand where, and their pages."""

    jobs_total: int = 0
    jobs_queued: int = 0
    jobs_running: int = 0
    jobs_completed: int = 0
    jobs_failed: int = 0
    jobs_cancelled: int = 0
    pages_done: int = 0
    pages_total: int = 0

    @classmethod
    def counts_of(cls, row: Mapping[str, Any]) -> dict[str, int]:
        """The counts a row holds, as keyword arguments."""
        return {name: int(row[name]) for name in _COUNT_FIELDS}

    @property
    def ended(self) -> int:
        return self.jobs_completed + self.jobs_failed + self.jobs_cancelled

    @property
    def all_ended(self) -> bool:
        return self.jobs_total > 0 and self.ended == self.jobs_total


_COUNT_FIELDS = tuple(f.name for f in fields(JobCounts))


@dataclass(frozen=True)
class JobSums(JobCounts):
    """What the batch's jobs add up to (store.batches.sum_jobs reads it, one row per batch)."""

    # The batch's expected work per stage (extract, OCR, analyze), see the module docstring.
    stages: StageWork = NO_WORK
    cost_usd: float = 0.0

    @classmethod
    def of(cls, row: Mapping[str, Any] | None, book: CostBook = BOOK) -> JobSums:
        """The sums of a store.batches.sum_jobs row; `book`: the costs the jobs' work uses."""
        if row is None or not row["jobs_total"]:
            return cls()
        return cls(
            **cls.counts_of(row),
            stages=stage_work_of(row, book),
            cost_usd=float(row["cost_usd"]),
        )

    @property
    def work(self) -> Work:
        return Work(sum(w.done for w in self.stages), sum(w.total for w in self.stages))


# The per-job arrays of a sum_jobs row, in the order _job_share takes them.
_JOB_ARRAYS = (
    "job_format",
    "job_pages",
    "job_ended",
    "extract_total",
    "extract_done",
    "ocr_total",
    "ocr_done",
    "analyze_total",
    "analyze_done",
)

# What one sized job adds to its batch: expected work in all, then done, per stage.
_JobShare = tuple[float, float, float, float, float, float]


# Every refresh of a batch sums all of its jobs, most of which have not moved since the last
# one (queued, ended, or waiting): their shares are looked up by value rather than
# recomputed, which keeps a 1,000-job batch's refresh under 2 ms of Python (the costs are in
# the key, so learned costs that change make new entries).
@lru_cache(maxsize=16384)
def _job_share(
    pages: int,
    ended: bool,
    extract: tuple[int, int],
    ocr: tuple[int, int],
    analyze: tuple[int, int],
    costs: FormatCosts,
) -> _JobShare:
    stages = job_stage_work(pages, extract, ocr, analyze, costs) or NO_WORK
    ex, oc, an = stages
    if ended:
        return (ex.total, oc.total, an.total, ex.total, oc.total, an.total)
    done = [min(w.done, w.total) for w in stages]
    return (ex.total, oc.total, an.total, done[0], done[1], done[2])


def stage_work_of(row: Mapping[str, Any], book: CostBook = BOOK) -> StageWork:
    """The batch's expected work per stage from its jobs' counters (one array per column,
    one element per job, in the same job order): costmodel.batch_stage_work of the jobs'
    job_stage_work, summed in one pass (a job not sized yet counts as the typical sized one,
    an ended job's work is all done)."""
    sums = [0.0] * 6
    sized = unsized = unsized_ended = 0
    for fmt, pages, over, ex_t, ex_d, ocr_t, ocr_d, an_t, an_d in zip(
        *(row[name] for name in _JOB_ARRAYS), strict=True
    ):
        if pages is None:
            unsized += 1
            unsized_ended += bool(over)
            continue
        costs = book.for_format(cost_key(fmt, ocr_t, ex_d))
        share = _job_share(pages, bool(over), (ex_t, ex_d), (ocr_t, ocr_d), (an_t, an_d), costs)
        sized += 1
        sums = [a + b for a, b in zip(sums, share, strict=True)]
    works = []
    for i in range(3):
        typical = sums[i] / sized if sized else 1.0
        works.append(Work(sums[3 + i] + unsized_ended * typical, sums[i] + unsized * typical))
    return works[0], works[1], works[2]


@dataclass(frozen=True)
class Aggregate(JobCounts):
    """The aggregate columns of a batch row, as progress writes them (seq apart)."""

    status: JobStatus = JobStatus.QUEUED
    percent: float = 0.0
    eta_seconds: int | None = None
    cost_usd: float = 0.0
    finished_at: datetime | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Aggregate:
        """The aggregate a batch row holds."""
        return cls(
            **cls.counts_of(row),
            status=JobStatus(row["status"]),
            percent=round(float(row["percent"]), 1),
            eta_seconds=row["eta_seconds"],
            cost_usd=float(row["cost_usd"]),
            finished_at=row["finished_at"],
        )

    def content(self) -> tuple[Any, ...]:
        """What a client sees change: everything but the ETA and times, which move alone."""
        return (
            self.status,
            self.jobs_total,
            self.jobs_queued,
            self.jobs_running,
            self.jobs_completed,
            self.jobs_failed,
            self.jobs_cancelled,
            self.pages_done,
            self.pages_total,
            self.percent,
            self.cost_usd,
        )

    @property
    def final(self) -> bool:
        return self.status in TERMINAL_STATUSES


def batch_status(sums: JobSums, *, cancel_requested: bool) -> JobStatus:
    """The status the batch's jobs give it (see the module docstring)."""
    if not sums.all_ended:
        return JobStatus.QUEUED if sums.jobs_queued == sums.jobs_total else JobStatus.PROCESSING
    if sums.jobs_cancelled and cancel_requested:
        return JobStatus.CANCELLED
    if sums.jobs_completed:
        return JobStatus.COMPLETED
    if cancel_requested or sums.jobs_cancelled:
        return JobStatus.CANCELLED
    return JobStatus.FAILED


def batch_percent(previous: float, sums: JobSums, status: JobStatus) -> float:
    """The percent to show: never decreasing, at most 99 until every job has ended, 100 then."""
    if status in TERMINAL_STATUSES:
        return 100.0
    work = sums.work
    raw = 100.0 * work.share if work.total > 0 else 0.0
    return round(max(round(previous, 1), min(UNFINISHED_CAP, raw)), 1)


def batch_eta(sums: JobSums, created_at: datetime, now: datetime) -> int | None:
    """Seconds until the batch's bottleneck stage ends, at the pace kept since it was created
    (None before enough of its work is done to judge)."""
    return bottleneck_eta_seconds(sums.stages, (now - created_at).total_seconds())


def next_aggregate(
    previous: Aggregate,
    sums: JobSums,
    *,
    cancel_requested: bool,
    created_at: datetime,
    now: datetime,
) -> Aggregate:
    """The batch's new aggregate from its jobs' sums and its previous aggregate."""
    status = batch_status(sums, cancel_requested=cancel_requested)
    percent = batch_percent(previous.percent, sums, status)
    final = status in TERMINAL_STATUSES
    return Aggregate(
        status=status,
        jobs_total=sums.jobs_total,
        jobs_queued=sums.jobs_queued,
        jobs_running=sums.jobs_running,
        jobs_completed=sums.jobs_completed,
        jobs_failed=sums.jobs_failed,
        jobs_cancelled=sums.jobs_cancelled,
        pages_done=min(sums.pages_done, sums.pages_total),
        pages_total=sums.pages_total,
        percent=percent,
        eta_seconds=None if final else batch_eta(sums, created_at, now),
        cost_usd=round(sums.cost_usd, 6),
        finished_at=(previous.finished_at or now) if final else None,
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def batch_message(
    batch_id: uuid.UUID, seq: int, aggregate: Aggregate, updated_at: datetime | None
) -> BatchMessage:
    return {
        "type": "batch",
        "batch_id": str(batch_id),
        "seq": seq,
        "status": aggregate.status,
        "jobs_total": aggregate.jobs_total,
        "jobs_queued": aggregate.jobs_queued,
        "jobs_running": aggregate.jobs_running,
        "jobs_completed": aggregate.jobs_completed,
        "jobs_failed": aggregate.jobs_failed,
        "jobs_cancelled": aggregate.jobs_cancelled,
        "pages_done": aggregate.pages_done,
        "pages_total": aggregate.pages_total,
        "percent": aggregate.percent,
        "eta_seconds": aggregate.eta_seconds,
        "cost_usd": aggregate.cost_usd,
        "updated_at": _iso(updated_at),
        "final": aggregate.final,
    }


def job_message(batch_id: uuid.UUID, seq: int, update: Snapshot) -> JobMessage:
    return {"type": "job", "batch_id": str(batch_id), "seq": seq, "job": update}


@dataclass
class BatchChange:
    """What one refresh writes for one batch: its new aggregate and seq, and the stream
    messages in seq order (the jobs' changes, then the aggregate's if it changed)."""

    batch_id: uuid.UUID
    aggregate: Aggregate
    seq: int
    messages: list[StreamMessage]


def plan_change(
    batch_id: uuid.UUID,
    row: Mapping[str, Any],
    sums: JobSums,
    job_updates: list[Snapshot],
    now: datetime,
) -> BatchChange | None:
    """The messages and row a refresh writes for one batch (`row`: the locked batch row);
    None when neither a job nor the aggregate changed what a client sees."""
    previous = Aggregate.of(row)
    aggregate = next_aggregate(
        previous,
        sums,
        cancel_requested=row["cancel_requested_at"] is not None,
        created_at=row["created_at"],
        now=now,
    )
    seq: int = row["seq"]
    messages: list[StreamMessage] = []
    for update in job_updates:
        seq += 1
        messages.append(job_message(batch_id, seq, update))
    if aggregate.content() != previous.content() or row["seq"] == 0:
        seq += 1
        messages.append(batch_message(batch_id, seq, aggregate, now))
    if not messages:
        return None
    return BatchChange(batch_id, aggregate, seq, messages)
