"""ETA accuracy (issue 12, "progress you can set a clock by"): a 30-page scanned PDF, a
352-page text PDF and a batch of 50 mixed documents (submitted as 50 jobs).

Each case runs twice on the same stack: first with the costs it starts with (the cold run:
seeds, and whatever the earlier cases taught), then again once the first run's jobs have been
learned (the warm run, the target). For each job every update it pushed is read back (its
percent, ETA and time); at the first update showing 25%, 50% and 75%, the ETA it showed is
compared with the time that really remained until its final update. The error is
|ETA - remaining| / remaining. "Today" is the arithmetic before this change (fixed stage
weights, ETA = elapsed x (100 - percent) / percent) run on the same recorded updates.

The batch's figures come from the jobs' updates merged in time: its work is the sum of its
jobs' (costmodel.batch_work, at the costs the stack had learned when the batch was
submitted), its ETA the remaining work at the rate the batch has shown since its submission;
today's batch arithmetic is the page-weighted mean of the jobs' percents, extrapolated the
same way as a job's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks.common import BenchStack, CorpusMissing, corpus_files, http_client, target
from benchmarks.text_throughput import build_long_pdf
from services.progress.arithmetic import Counts, StageCount, pages_done
from services.progress.costmodel import (
    CostBook,
    FormatCosts,
    StageWork,
    batch_stage_work,
    bottleneck_eta_seconds,
    cost_key,
    job_stage_work,
)
from services.progress.learning import reload

MARKS = (25.0, 50.0, 75.0)
ERROR_GOAL = 0.20


# --- today's arithmetic (before this change), for the figures alongside -----------------


def fixed_weight_percent(pages_total: int | None, c: Counts) -> float:
    """The percent before this change: extract 0.3, OCR 0.4 (when there is OCR work),
    analyze 0.3 scaled by the share of pages whose chunks are known."""
    if pages_total is None:
        return 0.0
    if pages_total == 0:
        return 100.0

    def fraction(done: int, total: int) -> float:
        return 0.0 if total <= 0 else min(1.0, max(0.0, done / total))

    parts = [(0.3, fraction(c.extract.done, pages_total))]
    if c.ocr.total > 0:
        parts.append((0.4, fraction(c.ocr.done, c.ocr.total)))
    if c.analyze.total > 0:
        known = fraction(pages_done(c), pages_total)
        parts.append((0.3, fraction(c.analyze.done, c.analyze.total) * known))
    else:
        finished = c.extract.done >= pages_total and c.ocr.done >= c.ocr.total
        parts.append((0.3, 1.0 if finished else 0.0))
    return 100.0 * sum(w * f for w, f in parts) / sum(w for w, _ in parts)


def extrapolated_eta(elapsed: float, percent: float) -> float | None:
    if elapsed <= 0 or percent < 5.0 or percent >= 100.0:
        return None
    return elapsed * (100.0 - percent) / percent


# --- recorded updates -----------------------------------------------------------------------


@dataclass(frozen=True)
class Update:
    at: float  # epoch seconds
    percent: float
    eta: float | None
    counts: Counts
    pages_total: int | None
    final: bool


def counts_of(stages: dict[str, dict[str, int]]) -> Counts:
    return Counts.from_mapping(
        {name: StageCount(s["total"], s["done"], s["failed"]) for name, s in stages.items()}
    )


@dataclass
class Timeline:
    """One job's updates, its start (extraction started) and format."""

    updates: list[Update]
    started: float
    fmt: str | None

    @property
    def end(self) -> float:
        return self.updates[-1].at

    def old(self) -> list[tuple[float, float, float | None]]:
        """(time, percent, ETA) as today's arithmetic would have shown them."""
        shown, out = 0.0, []
        for u in self.updates:
            raw = (
                100.0
                if u.final
                else min(99.0, max(1.0, fixed_weight_percent(u.pages_total, u.counts)))
            )
            shown = max(shown, raw)
            eta = None if u.final else extrapolated_eta(u.at - self.started, shown)
            out.append((u.at, shown, eta))
        return out

    def new(self) -> list[tuple[float, float, float | None]]:
        return [(u.at, u.percent, u.eta) for u in self.updates]


async def timeline(bs: BenchStack, job_id: str) -> Timeline:
    jid = uuid.UUID(job_id)
    job = await bs.pool.fetchrow(
        "SELECT extract(epoch FROM started_at)::float8 AS started, format FROM jobs "
        "WHERE job_id = $1",
        jid,
    )
    rows = await bs.pool.fetch(
        "SELECT payload FROM job_updates WHERE job_id = $1 ORDER BY seq", jid
    )
    updates = [
        Update(
            at=datetime.fromisoformat(p["updated_at"]).timestamp(),
            percent=p["percent"],
            eta=p["eta_seconds"],
            counts=counts_of(p["stages"]),
            pages_total=p["pages_total"],
            final=p["final"],
        )
        for p in (r["payload"] for r in rows)
    ]
    return Timeline(updates, job["started"] or updates[0].at, job["format"])


def errors_at_marks(
    points: list[tuple[float, float, float | None]], end: float
) -> dict[str, float | None]:
    """At the first point showing each mark: |ETA - remaining| / remaining (None: no ETA)."""
    out: dict[str, float | None] = {}
    for mark in MARKS:
        point = next((p for p in points if p[1] >= mark), None)
        remaining = end - point[0] if point else 0.0
        if point is None or point[2] is None or remaining <= 0:
            out[f"{mark:g}%"] = None
            continue
        out[f"{mark:g}%"] = round(abs(point[2] - remaining) / remaining, 3)
    return out


def errors_at_times(
    points: list[tuple[float, float, float | None]], start: float, end: float
) -> dict[str, float | None]:
    """At 25/50/75% of the wall time: the ETA of the last point shown by then, less the time
    since it was shown, against the time that remained."""
    out: dict[str, float | None] = {}
    for mark in MARKS:
        at = start + (end - start) * mark / 100
        point = next((p for p in reversed(points) if p[0] <= at), None)
        if point is None or point[2] is None:
            out[f"t{mark:g}%"] = None
            continue
        shown = max(0.0, point[2] - (at - point[0]))
        out[f"t{mark:g}%"] = round(abs(shown - (end - at)) / (end - at), 3)
    return out


def worst(errors: dict[str, float | None]) -> float:
    """The largest error; a mark without an ETA counts as wholly wrong."""
    return max(1.0 if e is None else e for e in errors.values())


def trace(line: Timeline) -> list[tuple[float, float, float | None, float, float | None]]:
    """Per update: seconds since the start, percent and ETA shown, and today's."""
    return [
        (round(t - line.started, 2), p, eta, old_p, None if old_eta is None else round(old_eta, 1))
        for (t, p, eta), (_, old_p, old_eta) in zip(line.new(), line.old(), strict=True)
    ]


# --- the cases --------------------------------------------------------------------------------


async def run_jobs(bs: BenchStack, docs: list[Path]) -> tuple[list[str], float]:
    """Submit the documents at once; returns their job ids (once all ended) and when the
    first submission started (epoch seconds)."""
    submitted = time.time()
    async with http_client() as client:
        results = await asyncio.gather(
            *(bs.submit(client, p.read_bytes(), p.name, ocr="auto") for p in docs)
        )
    job_ids = [job_id for job_id, _ in results]
    await bs.wait_all(job_ids)
    return job_ids, submitted


async def single_job(bs: BenchStack, doc: Path) -> dict[str, Any]:
    (job_id,), _ = await run_jobs(bs, [doc])
    status, _text = await bs.job_texts(job_id)
    bs.check_job(f"eta {doc.name}", status, _text, baseline_has_text=False)
    line = await timeline(bs, job_id)
    return {
        "seconds": round(line.end - line.started, 2),
        "updates": len(line.updates),
        "trace": trace(line),
        "error_new": errors_at_marks(line.new(), line.end),
        "error_today": errors_at_marks(line.old(), line.end),
        "time_error_new": errors_at_times(line.new(), line.started, line.end),
        "time_error_today": errors_at_times(line.old(), line.started, line.end),
    }


def batch_points(
    lines: list[Timeline], submitted: float, book: CostBook
) -> tuple[list[tuple[float, float, float | None]], list[tuple[float, float, float | None]]]:
    """The batch's (time, percent, ETA) at every update of any of its jobs: with the model,
    and with today's arithmetic."""
    events = sorted((u.at, i, u) for i, line in enumerate(lines) for u in line.updates)
    latest: list[Update | None] = [None] * len(lines)
    new, old, shown_new, shown_old = [], [], 0.0, 0.0
    for at, i, update in events:
        latest[i] = update
        elapsed = at - submitted
        works = [
            None if u is None else stage_work(u, book.for_format(key_of(line.fmt, u)))
            for u, line in zip(latest, lines, strict=True)
        ]
        ended = [u is not None and u.final for u in latest]
        stages = batch_stage_work(works, finished=ended)
        share = sum(w.done for w in stages) / max(1e-9, sum(w.total for w in stages))
        shown_new = max(shown_new, 100.0 * share if not all(ended) else 100.0)
        new.append((at, min(shown_new, 100.0), bottleneck_eta_seconds(stages, elapsed)))
        pages = [max(1, u.pages_total or 1) if u else 1 for u in latest]
        percents = [0.0 if u is None else (100.0 if u.final else u_old(u)) for u in latest]
        value = sum(p * w for p, w in zip(percents, pages, strict=True)) / sum(pages)
        shown_old = max(shown_old, value)
        old.append((at, shown_old, extrapolated_eta(elapsed, shown_old)))
    return new, old


def key_of(fmt: str | None, u: Update) -> str:
    return cost_key(fmt, u.counts.ocr.total, u.counts.extract.done)


def stage_work(u: Update, costs: FormatCosts) -> StageWork | None:
    c = u.counts
    return job_stage_work(
        u.pages_total,
        (c.extract.total, c.extract.done),
        (c.ocr.total, c.ocr.done),
        (c.analyze.total, c.analyze.done),
        costs,
    )


def u_old(u: Update) -> float:
    return min(99.0, max(1.0, fixed_weight_percent(u.pages_total, u.counts)))


async def batch(bs: BenchStack, docs: list[Path]) -> dict[str, Any]:
    book = CostBook()
    await reload(bs.pool, book)  # the costs the stack has when the batch is submitted
    job_ids, submitted = await run_jobs(bs, docs)
    lines = [await timeline(bs, j) for j in job_ids]
    end = max(line.end for line in lines)
    new, old = batch_points(lines, submitted, book)
    step = max(1, len(new) // 40)
    return {
        "jobs": len(job_ids),
        "seconds": round(end - submitted, 2),
        "trace": [
            (
                round(t - submitted, 2),
                round(p, 1),
                eta,
                round(old_p, 1),
                old_eta and round(old_eta, 1),
            )
            for (t, p, eta), (_, old_p, old_eta) in list(zip(new, old, strict=True))[::step]
        ],
        "error_new": errors_at_marks(new, end),
        "error_today": errors_at_marks(old, end),
        "time_error_new": errors_at_times(new, submitted, end),
        "time_error_today": errors_at_times(old, submitted, end),
    }


def inputs(work: Path, smoke: bool) -> dict[str, list[Path]]:
    scan_pages, text_pages, batch_size = (4, 20, 6) if smoke else (30, 352, 50)
    scans = [p for p in corpus_files("pdf_scanned", (".pdf",))]
    texts = corpus_files("pdf_text", (".pdf",))
    images = corpus_files("pdf_scanned", (".png", ".tif", ".tiff"))
    try:  # the batch mixes in office documents when the corpus has them
        office = corpus_files("office", (".docx", ".html", ".txt", ".csv"))
    except CorpusMissing:
        office = []
    mixed = list(itertools.islice(itertools.cycle([*texts, *images, *office, *scans]), batch_size))
    return {
        "scanned_pdf": [build_long_pdf(work / f"scan-{scan_pages}.pdf", scan_pages, scans)],
        "text_pdf": [build_long_pdf(work / f"text-{text_pages}.pdf", text_pages, texts)],
        "batch": mixed,
    }


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cases = inputs(work, smoke)
    detail: dict[str, Any] = {}
    targets = []
    for name, docs in cases.items():
        measure = batch if name == "batch" else (lambda b, d: single_job(b, d[0]))
        cold = await measure(bs, docs)
        warm = await measure(bs, docs)
        label = f"{name} ({len(docs)} documents)" if name == "batch" else docs[0].name
        detail[name] = {"documents": label, "cold": cold, "warm": warm}
        value = worst(warm["error_new"])
        targets.append(
            target(
                f"eta_error_{name}",
                value,
                f"ETA error at 25/50/75% <= {ERROR_GOAL:.0%} of the remaining time (learned costs)",
                value <= ERROR_GOAL,
                new=warm["error_new"],
                today=warm["error_today"],
                cold_new=cold["error_new"],
                cold_today=cold["error_today"],
                seconds=warm["seconds"],
            )
        )
    return targets, detail
