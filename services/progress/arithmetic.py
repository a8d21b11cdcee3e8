"""Pure progress arithmetic: counts per stage, the completion predicate, percent, stage name,
ETA and the snapshot pushed to clients. No I/O here, so every rule is unit-testable.

Percent and ETA come from the job's expected work (costmodel.py): each stage weighs what it
is expected to cost this document, at the costs learned for its format.

Kept apart from transitions.py: these rules are about numbers (the admin listing and the
snapshot use them too), while transitions are about what an event does to a job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypedDict

from services.progress.costmodel import DEFAULT_COSTS, FormatCosts, Work, job_eta_seconds, job_work
from shared.events import TERMINAL_STATUSES, JobPhase, JobStatus, Stage

# Shown as soon as a job has started, so a client sees it move.
STARTED_FLOOR = 1.0
STAGES: tuple[Stage, ...] = (Stage.EXTRACT, Stage.OCR, Stage.ANALYZE)


class StageCount(NamedTuple):
    total: int = 0
    done: int = 0
    failed: int = 0

    # Spelled out rather than zipped: these run for every job of every progress window.
    def plus(self, other: StageCount) -> StageCount:
        return StageCount(
            self.total + other.total, self.done + other.done, self.failed + other.failed
        )

    def minus(self, other: StageCount) -> StageCount:
        return StageCount(
            self.total - other.total, self.done - other.done, self.failed - other.failed
        )

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "done": self.done, "failed": self.failed}

    @property
    def nonzero(self) -> bool:
        return bool(self.total or self.done or self.failed)


@dataclass(frozen=True)
class Counts:
    """What is due, done and failed per stage.

    extract: total = pages_total, done = pages extracted, failed = pages with an error.
    ocr: total = extracted pages with ocr_pending, done = those ocred, failed = OCR errors.
    analyze: total = chunks announced so far (text layer + OCR), done = chunks analyzed.
    """

    extract: StageCount = StageCount()
    ocr: StageCount = StageCount()
    analyze: StageCount = StageCount()

    @classmethod
    def from_mapping(cls, rows: dict[str, StageCount]) -> Counts:
        return cls(**{s.value: rows.get(s, StageCount()) for s in STAGES})

    def of(self, stage: Stage) -> StageCount:
        count: StageCount = getattr(self, stage.value)
        return count

    def plus(self, delta: Counts) -> Counts:
        return Counts(
            self.extract.plus(delta.extract),
            self.ocr.plus(delta.ocr),
            self.analyze.plus(delta.analyze),
        )

    def minus(self, delta: Counts) -> Counts:
        return Counts(
            self.extract.minus(delta.extract),
            self.ocr.minus(delta.ocr),
            self.analyze.minus(delta.analyze),
        )

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            Stage.EXTRACT: self.extract.as_dict(),
            Stage.OCR: self.ocr.as_dict(),
            Stage.ANALYZE: self.analyze.as_dict(),
        }

    @property
    def nonzero(self) -> bool:
        return self.extract.nonzero or self.ocr.nonzero or self.analyze.nonzero


class Snapshot(TypedDict):
    """A snapshot as the hot path builds, stores and pushes it: the JSON form of
    shared.snapshots.ProgressSnapshot (a plain dict, so no model is validated per update;
    tests/unit/test_progress_arithmetic.py validates it against the model)."""

    seq: int
    job_id: str
    status: JobStatus
    stage: JobPhase
    percent: float
    stages: dict[str, dict[str, int]]
    pages_done: int
    pages_total: int | None
    eta_seconds: int | None
    stalled: bool
    error: str | None
    updated_at: str | None
    final: bool
    tokens: int
    cost_usd: float


def pages_done(counts: Counts) -> int:
    """Pages extracted and, if they needed OCR, ocred."""
    return counts.extract.done - (counts.ocr.total - counts.ocr.done)


def is_complete(pages_total: int | None, counts: Counts) -> bool:
    """Every page extracted, every pending OCR done, every announced chunk analyzed.

    Only decidable once pages_total is known; since OCR totals come from extracted pages and
    chunk totals from extracted/ocred pages, all totals are final once the first two hold.
    """
    if pages_total is None:
        return False
    return (
        counts.extract.done >= pages_total
        and counts.ocr.done >= counts.ocr.total
        and counts.analyze.done >= counts.analyze.total
    )


def work_of(
    pages_total: int | None, counts: Counts, costs: FormatCosts = DEFAULT_COSTS
) -> Work | None:
    """The job's expected work, done and in all (None while its page count is unknown)."""
    return job_work(
        pages_total,
        (counts.extract.total, counts.extract.done),
        (counts.ocr.total, counts.ocr.done),
        (counts.analyze.total, counts.analyze.done),
        costs,
    )


def raw_percent(
    pages_total: int | None, counts: Counts, costs: FormatCosts = DEFAULT_COSTS
) -> float:
    """Share of the expected work done, before the floor, cap and monotonic rules."""
    work = work_of(pages_total, counts, costs)
    if work is None:
        return 0.0
    return 100.0 * work.share


def next_percent(
    status: JobStatus,
    previous: float,
    pages_total: int | None,
    counts: Counts,
    costs: FormatCosts = DEFAULT_COSTS,
) -> float:
    """The percent to show: never decreasing, 99 at most until completed, 100 only then;
    failed and cancelled jobs keep their last percent."""
    previous = round(previous, 1)
    if status == JobStatus.COMPLETED:
        return 100.0
    if status in TERMINAL_STATUSES:
        return min(previous, 99.0)
    if status == JobStatus.QUEUED:
        return previous
    value = max(STARTED_FLOOR, raw_percent(pages_total, counts, costs))
    return min(99.0, max(previous, round(value, 1)))


def stage_name(status: JobStatus, pages_total: int | None, counts: Counts) -> JobPhase:
    if status in TERMINAL_STATUSES or status == JobStatus.QUEUED:
        return JobPhase(status)
    if pages_total is None or counts.extract.done < pages_total:
        return JobPhase.EXTRACTING
    if counts.ocr.done < counts.ocr.total:
        return JobPhase.OCR
    return JobPhase.ANALYZING


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def build_snapshot(
    *,
    job_id: str,
    seq: int,
    status: JobStatus,
    stage: JobPhase,
    percent: float,
    counts: Counts,
    pages_total: int | None,
    stalled: bool,
    error: str | None,
    updated_at: datetime | None,
    started_at: datetime | None = None,
    now: datetime | None = None,
    tokens: int = 0,
    cost_usd: float = 0.0,
    costs: FormatCosts = DEFAULT_COSTS,
) -> Snapshot:
    """`costs`: the job's format's; its ETA is its remaining expected work at its rate."""
    elapsed = (now - started_at).total_seconds() if now and started_at else None
    terminal = status in TERMINAL_STATUSES
    eta = None if terminal else job_eta_seconds(work_of(pages_total, counts, costs), elapsed)
    return {
        "seq": seq,
        "job_id": job_id,
        "status": status,
        "stage": stage,
        "percent": round(percent, 1),
        "stages": counts.as_dict(),
        "pages_done": max(0, pages_done(counts)),
        "pages_total": pages_total,
        "eta_seconds": eta,
        "stalled": stalled,
        "error": error,
        "updated_at": _iso(updated_at),
        "final": terminal,
        "tokens": tokens,
        "cost_usd": round(cost_usd, 10),
    }


# Fields that change without the job progressing; they alone never make a new update.
_JITTER = ("seq", "eta_seconds", "updated_at")


def snapshot_content(snapshot: Snapshot | dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k not in _JITTER}
