"""A batch's percent and ETA follow the jobs' cost model (services/progress/batches.py):
summed from each job's counters at its format's learned costs, never backwards, 100 only
once every job has ended."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from services.progress.batches import Aggregate, JobSums, next_aggregate, stage_work_of
from services.progress.costmodel import (
    BOOK,
    CostBook,
    FormatCosts,
    StageCost,
    batch_stage_work,
    bottleneck_eta_seconds,
    job_stage_work,
)
from shared.events import TERMINAL_STATUSES, JobStatus, Stage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _job(
    fmt: str | None = "pdf",
    pages: int | None = None,
    status: JobStatus = JobStatus.QUEUED,
    ex: tuple[int, int] = (0, 0),
    ocr: tuple[int, int] = (0, 0),
    an: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    return {"fmt": fmt, "pages": pages, "status": status, "ex": ex, "ocr": ocr, "an": an}


def _row(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """A store.batches.sum_jobs row for these jobs."""
    statuses = [j["status"] for j in jobs]
    return {
        "jobs_total": len(jobs),
        "jobs_queued": statuses.count(JobStatus.QUEUED),
        "jobs_running": statuses.count(JobStatus.PROCESSING),
        "jobs_completed": statuses.count(JobStatus.COMPLETED),
        "jobs_failed": statuses.count(JobStatus.FAILED),
        "jobs_cancelled": statuses.count(JobStatus.CANCELLED),
        "pages_done": 0,
        "pages_total": sum(j["pages"] or 0 for j in jobs),
        "cost_usd": 0.0,
        "job_format": [j["fmt"] for j in jobs],
        "job_pages": [j["pages"] for j in jobs],
        "job_ended": [s in TERMINAL_STATUSES for s in statuses],
        "extract_total": [j["ex"][0] for j in jobs],
        "extract_done": [j["ex"][1] for j in jobs],
        "ocr_total": [j["ocr"][0] for j in jobs],
        "ocr_done": [j["ocr"][1] for j in jobs],
        "analyze_total": [j["an"][0] for j in jobs],
        "analyze_done": [j["an"][1] for j in jobs],
    }


def test_stage_work_is_the_sum_of_the_jobs_model_work():
    jobs = [
        _job("pdf", 10, JobStatus.PROCESSING, ex=(10, 4), ocr=(1, 0), an=(6, 2)),
        _job("docx", 3, JobStatus.COMPLETED, ex=(3, 3), an=(3, 3)),
        _job("pdf", None),
    ]
    expected = batch_stage_work(
        [
            job_stage_work(10, (10, 4), (1, 0), (6, 2), BOOK.for_format("pdf")),
            job_stage_work(3, (3, 3), (0, 0), (3, 3), BOOK.for_format("docx")),
            None,
        ],
        finished=[False, True, False],
    )
    assert stage_work_of(_row(jobs)) == expected
    assert stage_work_of(_row([])) == batch_stage_work([])


def _advance(job: dict[str, Any], rng: random.Random) -> None:
    """One event of a job: it learns its pages, extracts a page (every other one needing
    OCR), OCRs one, analyzes a chunk (two per page), or ends."""
    pages = job["pages"]
    if job["status"] == JobStatus.QUEUED:
        job["status"], job["pages"] = JobStatus.PROCESSING, rng.randint(1, 12)
        job["ex"] = (job["pages"], 0)
        return
    (ex_t, ex_d), (ocr_t, ocr_d), (an_t, an_d) = job["ex"], job["ocr"], job["an"]
    moves = []
    if ex_d < pages:
        moves.append("ex")
    if ocr_d < ocr_t:
        moves.append("ocr")
    if an_d < an_t:
        moves.append("an")
    if not moves:
        job["status"] = rng.choice([JobStatus.COMPLETED] * 4 + [JobStatus.FAILED])
        return
    move = rng.choice(moves)
    if move == "ex":
        needs_ocr = ex_d % 2 == 1
        job["ex"], job["ocr"] = (ex_t, ex_d + 1), (ocr_t + needs_ocr, ocr_d)
        job["an"] = (an_t + (0 if needs_ocr else 2), an_d)
    elif move == "ocr":
        job["ocr"], job["an"] = (ocr_t, ocr_d + 1), (an_t + 2, an_d)
    else:
        job["an"] = (an_t, an_d + 1)
    if rng.random() < 0.05:  # a job fails halfway now and then
        job["status"] = JobStatus.FAILED


def test_percent_never_goes_back_and_reaches_100_only_when_every_job_ended():
    rng = random.Random(12)
    for _ in range(30):
        jobs = [_job(rng.choice(["pdf", "docx", None])) for _ in range(rng.randint(1, 6))]
        aggregate, now, percents = Aggregate(), T0, []
        while any(j["status"] not in TERMINAL_STATUSES for j in jobs):
            running = [j for j in jobs if j["status"] not in TERMINAL_STATUSES]
            _advance(rng.choice(running), rng)
            now += timedelta(seconds=1)
            sums = JobSums.of(_row(jobs))
            aggregate = next_aggregate(
                aggregate, sums, cancel_requested=False, created_at=T0, now=now
            )
            percents.append(aggregate.percent)
            if not sums.all_ended:
                assert aggregate.percent <= 99.0 and not aggregate.final
        assert percents == sorted(percents)
        assert aggregate.final and aggregate.percent == 100.0 and aggregate.eta_seconds is None
        assert percents.count(100.0) == 1


def test_percent_and_eta_follow_the_learned_costs():
    # Two 10-page PDFs: one fully extracted and waiting on its OCR, one not started on.
    jobs = [
        _job("pdf", 10, JobStatus.PROCESSING, ex=(10, 10), ocr=(10, 0)),
        _job("pdf", 10, JobStatus.PROCESSING, ex=(10, 0)),
    ]
    row = _row(jobs)
    cheap, dear = CostBook(), CostBook()
    cheap.replace({(Stage.OCR, "pdf/scan"): StageCost(0.1, 0.0, 1.0)})
    dear.replace({(Stage.OCR, "pdf/scan"): StageCost(1.0, 0.0, 1.0)})
    with_cheap, with_dear = JobSums.of(row, cheap), JobSums.of(row, dear)
    # The extraction done weighs more when the OCR left is cheap.
    assert with_cheap.work.share > with_dear.work.share
    now = T0 + timedelta(seconds=20)
    fast = next_aggregate(Aggregate(), with_cheap, cancel_requested=False, created_at=T0, now=now)
    slow = next_aggregate(Aggregate(), with_dear, cancel_requested=False, created_at=T0, now=now)
    assert fast.percent > slow.percent
    assert fast.eta_seconds is not None and slow.eta_seconds is not None
    assert slow.eta_seconds > fast.eta_seconds
    assert slow.eta_seconds == bottleneck_eta_seconds(with_dear.stages, 20.0)


def test_a_format_without_learned_costs_uses_its_seed():
    book = CostBook(costs={})
    jobs = [_job("odt", 4, JobStatus.PROCESSING, ex=(4, 2))]
    seeded = job_stage_work(4, (4, 2), (0, 0), (0, 0), book.for_format("odt"))
    assert stage_work_of(_row(jobs), book) == batch_stage_work([seeded])
    assert isinstance(book.for_format("odt"), FormatCosts)
