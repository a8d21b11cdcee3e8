"""The expected work of a job, from what each stage costs per unit: pure functions, no I/O.

A job's wall time is modelled as three phases that follow one another: extraction (start to
the last page extracted), the OCR that outlasts it, and the analysis that outlasts both.
Each stage's phase costs `seconds_per_unit` per unit of its work (a page to extract, a page
to OCR, a chunk to analyze), learned per stage and document format from completed jobs
(store/stage_costs.py). Stages overlap: some OCR and analysis is done while an earlier phase
still runs; `overlap` is the share of a stage's units usually done before its own phase
begins, and that share earns no time of its own, so the percent moves with the clock rather
than jumping when a fast stage runs ahead.

The same functions give a batch its percent and ETA (services/progress/batches.py): its jobs'
work per stage summed (batch_stage_work), and its slowest stage's work left at the pace kept
since the batch was created (bottleneck_eta_seconds).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from shared.events import Stage

# Below this share of the expected work done, an ETA is mostly noise.
ETA_MIN_SHARE = 0.05
# How much of a job's expected work the learned costs count for, against the rate observed
# in this job, when extrapolating its ETA (pseudo-seconds, as a share of its expected total).
PRIOR_SHARE = 1.0
# How many pages of this job it takes before its own OCR share and chunks per page count as
# much as the learned ones.
PRIOR_PAGES = 3.0
# An overlap this close to 1 would make a phase's last units count for everything.
OVERLAP_MAX = 0.9


@dataclass(frozen=True)
class StageCost:
    """What one stage costs for one format: seconds of the job's wall time per unit of the
    stage's work, the share of its units done before its phase begins, and its units per
    page of the document (1 for extraction, the share of pages needing OCR, chunks per page)."""

    seconds_per_unit: float
    overlap: float = 0.0
    units_per_page: float = 1.0


@dataclass(frozen=True)
class FormatCosts:
    extract: StageCost
    ocr: StageCost
    analyze: StageCost

    def of(self, stage: Stage) -> StageCost:
        cost: StageCost = getattr(self, stage.value)
        return cost


# Scans and text documents of one format cost very different things per page (a scanned PDF's
# extraction renders every page), so a job most of whose pages need OCR has costs of its own:
# "<format>/scan".
SCAN_SUFFIX = "/scan"

# Cold-start seeds, from a 30-page scanned PDF and a 352-page text PDF on 2 cores (see
# docs/decisions/0930-eta-from-learned-stage-costs.md); learned values replace them.
_ANALYZE_SEED = StageCost(0.004, overlap=0.9, units_per_page=2.0)
DEFAULT_COSTS = FormatCosts(StageCost(0.03), StageCost(0.45, 0.1, 0.0), _ANALYZE_SEED)
DEFAULT_SCAN_COSTS = FormatCosts(StageCost(0.05), StageCost(0.5, 0.1, 1.0), _ANALYZE_SEED)
SEED_COSTS: dict[str, FormatCosts] = {
    # A text PDF's few image pages are ocred while its extraction runs: little OCR phase.
    "pdf": FormatCosts(StageCost(0.03), StageCost(0.05, 0.5, 0.1), _ANALYZE_SEED),
    "pdf" + SCAN_SUFFIX: FormatCosts(StageCost(0.1), StageCost(0.45, 0.1, 1.0), _ANALYZE_SEED),
}


def cost_key(fmt: str | None, ocr_total: int, extract_done: int) -> str:
    """The costs a job uses: its format's, or its format's scan costs once most of the pages
    extracted so far need OCR."""
    base = fmt or ""
    if extract_done > 0 and 2 * ocr_total > extract_done:
        return base + SCAN_SUFFIX
    return base


def seed_costs(key: str) -> FormatCosts:
    default = DEFAULT_SCAN_COSTS if key.endswith(SCAN_SUFFIX) else DEFAULT_COSTS
    return SEED_COSTS.get(key, default)


@dataclass
class CostBook:
    """The costs this process uses: seeds overlaid with the learned costs, by cost_key.
    `costs` is replaced whole (one assignment) when the learned costs are reread, so a reader
    never sees half of an update."""

    costs: dict[str, FormatCosts] = field(default_factory=lambda: dict(SEED_COSTS))

    def for_format(self, key: str | None) -> FormatCosts:
        costs = self.costs.get(key or "")
        return costs if costs is not None else seed_costs(key or "")

    def replace(self, learned: Mapping[tuple[Stage, str], StageCost]) -> None:
        self.costs = merge_learned(learned)


def merge_learned(learned: Mapping[tuple[Stage, str], StageCost]) -> dict[str, FormatCosts]:
    """The seeds with every learned (stage, cost key) cost put in their place."""
    keys = set(SEED_COSTS) | {key for _, key in learned}
    merged: dict[str, FormatCosts] = {}
    for key in keys:
        base = seed_costs(key)
        merged[key] = FormatCosts(
            extract=learned.get((Stage.EXTRACT, key), base.extract),
            ocr=learned.get((Stage.OCR, key), base.ocr),
            analyze=learned.get((Stage.ANALYZE, key), base.analyze),
        )
    return merged


# The process's book: the lifecycle reads it for every snapshot, the learner replaces it.
BOOK = CostBook()


class Work(NamedTuple):
    """Expected seconds of work of a job (or a batch): done so far, and in all."""

    done: float
    total: float

    @property
    def share(self) -> float:
        if self.total <= 0:
            return 1.0
        return min(1.0, max(0.0, self.done / self.total))


def _blend(observed: float, units: float, prior: float) -> float:
    """This job's own ratio once it has pages to go on, the learned one before."""
    return (observed + PRIOR_PAGES * prior) / (units + PRIOR_PAGES)


def _phase(cost: StageCost, done: float, expected: float) -> Work:
    """A stage's expected phase time, and how much of it is done: units done before the phase
    usually begins (the overlap) earn nothing."""
    total = expected * cost.seconds_per_unit
    if expected <= 0 or total <= 0:
        return Work(0.0, total)
    overlap = min(OVERLAP_MAX, max(0.0, cost.overlap))
    fraction = (min(1.0, done / expected) - overlap) / (1.0 - overlap)
    return Work(total * max(0.0, fraction), total)


# A job's expected work per stage: extract, OCR, analyze.
StageWork = tuple[Work, Work, Work]
NO_WORK: StageWork = (Work(0.0, 0.0), Work(0.0, 0.0), Work(0.0, 0.0))


def job_work(
    pages_total: int | None,
    extract: tuple[int, int],
    ocr: tuple[int, int],
    analyze: tuple[int, int],
    costs: FormatCosts,
) -> Work | None:
    """Expected work of one job from its (total, done) per stage; None while its page count
    is unknown."""
    stages = job_stage_work(pages_total, extract, ocr, analyze, costs)
    if stages is None:
        return None
    return Work(sum(w.done for w in stages), sum(w.total for w in stages))


def job_stage_work(
    pages_total: int | None,
    extract: tuple[int, int],
    ocr: tuple[int, int],
    analyze: tuple[int, int],
    costs: FormatCosts,
) -> StageWork | None:
    """Expected work of one job per stage. Totals not known yet (OCR of pages not extracted,
    chunks of pages not announced) are estimated from this job's pages so far and the
    learned units per page."""
    if pages_total is None:
        return None
    if pages_total <= 0:
        return NO_WORK
    ex_done = min(extract[1], pages_total)
    left = pages_total - ex_done
    ocr_total, ocr_done = ocr
    ocr_share = _blend(ocr_total, ex_done, costs.ocr.units_per_page)
    ocr_expected = max(ocr_total, ocr_done) + left * ocr_share
    # Chunks are known for pages extracted and, when they need OCR, ocred.
    chunks_total, chunks_done = analyze
    announced = max(0, ex_done - (ocr_total - ocr_done))
    unannounced = pages_total - announced
    per_page = _blend(chunks_total, announced, costs.analyze.units_per_page)
    chunks_expected = max(chunks_total, chunks_done) + unannounced * per_page
    return (
        _phase(costs.extract, ex_done, pages_total),
        _phase(costs.ocr, ocr_done, ocr_expected),
        _phase(costs.analyze, chunks_done, chunks_expected),
    )


def batch_work(jobs: Iterable[Work | None], *, finished: Iterable[bool] = ()) -> Work:
    """A batch's work: the sum of its jobs'. A job not yet sized counts as the mean of the
    sized ones (one second each while none is). `finished`: per job, whether it has ended;
    an ended job's work is all done, whatever its counters say."""
    works = list(jobs)
    ended = list(finished) or [False] * len(works)
    sized = [w.total for w in works if w is not None]
    typical = sum(sized) / len(sized) if sized else 1.0
    done = total = 0.0
    for work, over in zip(works, ended, strict=True):
        w_total = typical if work is None else work.total
        w_done = w_total if over else (0.0 if work is None else min(work.done, w_total))
        done, total = done + w_done, total + w_total
    return Work(done, total)


def batch_stage_work(
    jobs: Iterable[StageWork | None], *, finished: Iterable[bool] = ()
) -> StageWork:
    """A batch's work per stage, each summed as batch_work sums jobs."""
    works = list(jobs)
    ended = list(finished) or [False] * len(works)
    per_stage = [
        batch_work([None if w is None else w[i] for w in works], finished=ended) for i in range(3)
    ]
    return per_stage[0], per_stage[1], per_stage[2]


def bottleneck_eta_seconds(stages: StageWork, elapsed_seconds: float | None) -> int | None:
    """A batch's ETA: its jobs run side by side, so it ends when its slowest stage does: the
    longest of its whole work left at the pace it has kept, and each stage's work left at the
    pace that stage has kept (once it has done enough to judge)."""
    total = Work(sum(w.done for w in stages), sum(w.total for w in stages))
    overall = eta_seconds(total, elapsed_seconds)
    if overall is None or elapsed_seconds is None:
        return None
    etas = [float(overall)]
    for stage in stages:
        if stage.total > 0 and ETA_MIN_SHARE <= stage.share < 1.0:
            etas.append((stage.total - stage.done) * elapsed_seconds / stage.done)
    return max(0, round(max(etas)))


def eta_seconds(work: Work | None, elapsed_seconds: float | None, prior: float = 0.0) -> int | None:
    """Remaining expected work at the rate observed so far. `prior`: pseudo-seconds of work
    done at the learned rate (1 second of wall time per second of work), so that an early
    ETA leans on the learned costs and a later one on what this job (or batch) shows."""
    if work is None or elapsed_seconds is None or elapsed_seconds <= 0 or work.total <= 0:
        return None
    if work.share < ETA_MIN_SHARE or work.share >= 1.0:
        return None
    seconds_per_work = (elapsed_seconds + prior) / (work.done + prior)
    return max(0, round((work.total - work.done) * seconds_per_work))


def job_eta_seconds(work: Work | None, elapsed_seconds: float | None) -> int | None:
    """A job's ETA: its learned costs count for PRIOR_SHARE of its expected work."""
    prior = PRIOR_SHARE * work.total if work is not None else 0.0
    return eta_seconds(work, elapsed_seconds, prior)
