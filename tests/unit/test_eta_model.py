"""The expected-work model behind percent and ETA (services/progress/costmodel.py)."""

from __future__ import annotations

import random

import pytest

from services.progress.arithmetic import Counts, StageCount, is_complete, next_percent, work_of
from services.progress.costmodel import (
    DEFAULT_COSTS,
    PRIOR_SHARE,
    SEED_COSTS,
    CostBook,
    FormatCosts,
    StageCost,
    Work,
    batch_stage_work,
    batch_work,
    bottleneck_eta_seconds,
    cost_key,
    eta_seconds,
    job_eta_seconds,
    job_stage_work,
    job_work,
    merge_learned,
)
from shared.events import JobStatus, Stage


def counts(ex=(0, 0, 0), ocr=(0, 0, 0), an=(0, 0, 0)) -> Counts:
    return Counts(StageCount(*ex), StageCount(*ocr), StageCount(*an))


def _random_costs(rng: random.Random) -> FormatCosts:
    def cost(units_per_page: float) -> StageCost:
        return StageCost(rng.uniform(0.001, 2.0), rng.uniform(0.0, 1.0), units_per_page)

    return FormatCosts(cost(1.0), cost(rng.uniform(0, 1)), cost(rng.uniform(0, 5)))


# A 4-page job: pages 2 and 4 need OCR; page 1 has 2 text chunks, page 3 one, the OCR of
# page 2 one and of page 4 two.
_STEPS = ["ex1", "ex2", "ex3", "ex4", "ocr2", "ocr4", "an1a", "an1b", "an3", "an2", "an4a", "an4b"]
_NEEDS = {"an1a": "ex1", "an1b": "ex1", "an3": "ex3", "an2": "ocr2", "an4a": "ocr4", "an4b": "ocr4"}


def _counts_after(done: set[str]) -> Counts:
    """The counters once the steps in `done` are applied (in whatever order they came)."""
    extracted = {s for s in done if s.startswith("ex")}
    ocr_total = ("ex2" in extracted) + ("ex4" in extracted)
    ocr_done = ("ocr2" in done and "ex2" in extracted) + ("ocr4" in done and "ex4" in extracted)
    chunks = 2 * ("ex1" in done) + ("ex3" in done) + ("ocr2" in done) + 2 * ("ocr4" in done)
    analyzed = sum(1 for s, before in _NEEDS.items() if s in done and before in done)
    return counts(ex=(4, len(extracted), 0), ocr=(ocr_total, ocr_done, 0), an=(chunks, analyzed, 0))


def _orders(n: int) -> list[list[str]]:
    """Event orders as the bus may deliver them: any interleaving, an analysis only after its
    page's text or OCR (its chunks travel in that event)."""
    rng = random.Random(12)
    orders = []
    for _ in range(n):
        left, order = list(_STEPS), []
        while left:
            ready = [s for s in left if _NEEDS.get(s, "") in ("", *order)]
            step = rng.choice(ready)
            order.append(step)
            left.remove(step)
        orders.append(order)
    return orders


@pytest.mark.parametrize("seed", range(40))
def test_percent_is_monotonic_under_any_order_and_100_only_at_completion(seed: int):
    rng = random.Random(seed)
    costs = _random_costs(rng)
    for order in _orders(5):
        percent, seen, done = 0.0, [], set()
        for step in order:
            done.add(step)
            c = _counts_after(done)
            complete = is_complete(4, c)
            status = JobStatus.COMPLETED if complete else JobStatus.PROCESSING
            percent = next_percent(status, percent, 4, c, costs)
            seen.append(percent)
            assert (percent == 100.0) == complete, (order, step)
        assert seen == sorted(seen)
        assert seen[-1] == 100.0


def test_raw_share_never_reaches_one_before_everything_known_is_done():
    """With every cost positive, work left anywhere keeps the share below 1."""
    for order in _orders(30):
        done: set[str] = set()
        for step in order[:-1]:
            done.add(step)
            work = work_of(4, _counts_after(done), DEFAULT_COSTS)
            assert work is not None and work.done < work.total


def test_weights_follow_the_learned_costs():
    c = counts(ex=(10, 10, 0), ocr=(10, 5, 0), an=(10, 0, 0))
    cheap_ocr = FormatCosts(StageCost(0.1), StageCost(0.1, 0.0, 1.0), StageCost(0.0, 0, 1))
    dear_ocr = FormatCosts(StageCost(0.1), StageCost(1.0, 0.0, 1.0), StageCost(0.0, 0, 1))
    cheap, dear = work_of(10, c, cheap_ocr), work_of(10, c, dear_ocr)
    assert cheap is not None and dear is not None
    # Half the OCR done: the dearer OCR is, the nearer the share is to one half.
    assert dear.share == pytest.approx((1.0 + 5.0) / (1.0 + 10.0))
    assert cheap.share == pytest.approx((1.0 + 0.5) / (1.0 + 1.0))
    assert abs(dear.share - 0.5) < abs(cheap.share - 0.5)


def test_overlap_earns_no_time_of_its_own():
    """OCR usually 20% done when extraction ends: those pages count as the phase's start."""
    costs = FormatCosts(StageCost(0.0), StageCost(1.0, 0.2, 1.0), StageCost(0.0, 0, 0))
    at = {done: job_work(10, (10, 10), (10, done), (0, 0), costs) for done in (0, 2, 6, 10)}
    assert at[0] == at[2] == Work(0.0, 10.0)
    assert at[6] == Work(pytest.approx(5.0), 10.0)
    assert at[10] == Work(10.0, 10.0)


def test_unknown_totals_come_from_this_job_then_the_learned_ratios():
    costs = FormatCosts(StageCost(0.0), StageCost(1.0, 0.0, 0.1), StageCost(0.0, 0, 0))
    # Nothing extracted: 10 pages at the learned OCR share, 0.1 each.
    before = job_work(10, (10, 0), (0, 0), (0, 0), costs)
    assert before is not None and before.total == pytest.approx(1.0)
    # 5 pages extracted, every one needs OCR: the job's own share takes over.
    scanned = job_work(10, (10, 5), (5, 0), (0, 0), costs)
    assert scanned is not None
    assert scanned.total == pytest.approx(5 + 5 * (5 + 3 * 0.1) / (5 + 3))


def test_zero_pages_is_all_done_and_unknown_pages_unknown():
    assert job_work(0, (0, 0), (0, 0), (0, 0), DEFAULT_COSTS) == Work(0.0, 0.0)
    assert Work(0.0, 0.0).share == 1.0
    assert job_work(None, (0, 0), (0, 0), (0, 0), DEFAULT_COSTS) is None


def test_learned_costs_replace_the_seeds_of_their_stage_and_format_only():
    learned = {(Stage.OCR, "pdf"): StageCost(0.9, 0.3, 0.7), (Stage.EXTRACT, "docx"): StageCost(2)}
    merged = merge_learned(learned)
    assert merged["pdf"].ocr == StageCost(0.9, 0.3, 0.7)
    assert merged["pdf"].extract == SEED_COSTS["pdf"].extract
    assert merged["docx"].extract == StageCost(2)
    assert merged["docx"].ocr == DEFAULT_COSTS.ocr
    book = CostBook()
    assert book.for_format("pdf") == SEED_COSTS["pdf"]
    book.replace(learned)
    assert book.for_format("pdf").ocr.seconds_per_unit == 0.9
    assert book.for_format(None) == DEFAULT_COSTS
    assert book.for_format("weird") == DEFAULT_COSTS


def test_eta_is_remaining_work_at_the_observed_rate():
    assert eta_seconds(Work(5, 10), 5.0) == 5
    assert eta_seconds(Work(5, 10), 10.0) == 10  # twice as slow as learned
    assert eta_seconds(Work(5, 10), 10.0, prior=5.0) == round(5 * 15 / 10)
    assert eta_seconds(Work(0.1, 10), 5.0) is None  # below 5%: noise
    assert eta_seconds(Work(10, 10), 5.0) is None
    assert eta_seconds(None, 5.0) is None
    assert eta_seconds(Work(5, 10), None) is None
    assert eta_seconds(Work(5, 10), 0.0) is None
    # A job's own prior: a share of its expected work at the learned rate.
    prior = PRIOR_SHARE * 20
    assert job_eta_seconds(Work(5, 20), 5.0) == 15
    assert job_eta_seconds(Work(5, 20), 10.0) == round(15 * (10 + prior) / (5 + prior))
    assert 15 < round(15 * (10 + prior) / (5 + prior)) < 30


def test_batch_work_sums_jobs_and_sizes_the_unknown_ones_as_the_typical_one():
    jobs = [Work(2, 4), Work(0, 8), None]
    assert batch_work(jobs) == Work(2, 18)
    # An ended job is all done, whatever its counters said (a failed one stops early).
    assert batch_work(jobs, finished=[False, True, False]) == Work(10, 18)
    assert batch_work([None, None]) == Work(0, 2)
    assert batch_work([]) == Work(0, 0)


def test_batch_share_is_below_one_while_any_job_has_work_left():
    rng = random.Random(3)
    sizes = [rng.uniform(1, 20) for _ in range(6)]
    works: list[Work | None] = [None] * 6
    ended = [False] * 6
    steps = [(i, what) for i in range(6) for what in ("size", "half", "all", "end")]
    for i, what in steps:
        if what == "end":
            ended[i] = True
        else:
            done = {"size": 0.0, "half": 0.5, "all": 1.0}[what] * sizes[i]
            works[i] = Work(done, sizes[i])
        share = batch_work(works, finished=ended).share
        left = any(not e and (w is None or w.share < 1) for w, e in zip(works, ended, strict=True))
        assert (share < 1.0) == left


def test_a_batch_ends_when_its_slowest_stage_does():
    # Extraction is 90% done in 10 s; OCR, the bottleneck, 20% of its 10 s of work.
    stages = (Work(9, 10), Work(2, 10), Work(0, 0))
    assert eta_seconds(Work(11, 20), 10.0) == 8  # the whole batch at its pace
    # OCR at its own pace: 8 s of work left at 5 s a second of work.
    assert bottleneck_eta_seconds(stages, 10.0) == 40
    # A stage that has done too little to judge does not decide alone.
    early = (Work(9, 10), Work(0.1, 10), Work(0, 0))
    assert bottleneck_eta_seconds(early, 10.0) == eta_seconds(Work(9.1, 20), 10.0)
    assert bottleneck_eta_seconds(stages, None) is None


def test_batch_stage_work_sums_each_stage_of_its_jobs():
    a = (Work(1, 2), Work(0, 4), Work(0, 1))
    b = (Work(2, 2), Work(0, 0), Work(1, 1))
    assert batch_stage_work([a, b, None]) == (Work(3, 6), Work(0, 6), Work(1, 3))
    assert batch_stage_work([a, b], finished=[True, False]) == (
        Work(4, 4),
        Work(4, 4),
        Work(2, 2),
    )
    assert job_stage_work(None, (0, 0), (0, 0), (0, 0), DEFAULT_COSTS) is None
    staged = job_stage_work(10, (10, 5), (2, 1), (8, 4), DEFAULT_COSTS)
    whole = job_work(10, (10, 5), (2, 1), (8, 4), DEFAULT_COSTS)
    assert staged is not None and whole is not None
    assert sum(w.total for w in staged) == pytest.approx(whole.total)


def test_scans_have_costs_of_their_own_once_most_pages_need_ocr():
    assert cost_key("pdf", 0, 0) == "pdf"
    assert cost_key("pdf", 1, 1) == "pdf/scan"
    assert cost_key("pdf", 1, 2) == "pdf"  # half: still the text costs
    assert cost_key(None, 3, 4) == "/scan"
    book = CostBook()
    assert book.for_format("pdf/scan") == SEED_COSTS["pdf/scan"]
    assert book.for_format("png/scan").ocr.units_per_page == 1.0
    book.replace({(Stage.EXTRACT, "pdf/scan"): StageCost(1.5)})
    assert book.for_format("pdf/scan").extract == StageCost(1.5)
    assert book.for_format("pdf").extract == SEED_COSTS["pdf"].extract
