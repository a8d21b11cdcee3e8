"""Pure progress arithmetic: completion, percent, stage names, ETA, snapshots, the hub."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.progress.arithmetic import (
    Counts,
    StageCount,
    build_snapshot,
    is_complete,
    next_percent,
    pages_done,
    raw_percent,
    snapshot_content,
    stage_name,
    work_of,
)
from services.progress.costmodel import PRIOR_SHARE, FormatCosts, StageCost
from services.progress.hub import Hub
from shared.events import JobStatus
from shared.snapshots import ProgressSnapshot


def counts(ex=(0, 0, 0), ocr=(0, 0, 0), an=(0, 0, 0)) -> Counts:
    return Counts(StageCount(*ex), StageCount(*ocr), StageCount(*an))


def test_incomplete_until_pages_total_known():
    assert not is_complete(None, counts(ex=(0, 3, 0), an=(4, 4, 0)))


def test_complete_when_every_count_is_met():
    assert is_complete(3, counts(ex=(3, 3, 0), ocr=(1, 1, 0), an=(4, 4, 0)))


def test_pending_ocr_blocks_completion():
    assert not is_complete(3, counts(ex=(3, 3, 0), ocr=(1, 0, 0), an=(3, 3, 0)))


def test_unanalyzed_chunk_blocks_completion():
    assert not is_complete(3, counts(ex=(3, 3, 0), ocr=(1, 1, 0), an=(4, 3, 0)))


def test_missing_page_blocks_completion_even_if_known_chunks_are_analyzed():
    # Out of order: everything announced so far is analyzed, but page 3 is not in yet.
    assert not is_complete(3, counts(ex=(3, 2, 0), an=(2, 2, 0)))


def test_zero_pages_completes():
    assert is_complete(0, counts())
    assert raw_percent(0, counts()) == 100.0


def test_failed_pages_still_count_as_done():
    assert is_complete(2, counts(ex=(2, 2, 1), an=(1, 1, 0)))


def test_pages_done_excludes_pages_waiting_for_ocr():
    assert pages_done(counts(ex=(3, 3, 0), ocr=(2, 1, 0))) == 2


def _progressions(n: int = 60) -> list[tuple[str, ...]]:
    """Orders in which a 3-page job (page 2 needs OCR, 4 chunks) can advance: its first and
    last, and a fixed random sample of the rest."""
    steps = ["ex1", "ex2", "ex3", "ocr2", "an1", "an2", "an3", "an4"]
    orders = list(itertools.permutations(steps))
    return [orders[0], orders[-1], *random.Random(5).sample(orders, n)]


@pytest.mark.parametrize("order", _progressions())
def test_percent_never_decreases_and_reaches_100_only_when_completed(order):
    extracted, ocred, analyzed = set(), False, 0
    percent = 0.0
    seen = []
    for step in order:
        if step.startswith("ex"):
            extracted.add(step)
        elif step == "ocr2":
            ocred = True
        else:
            analyzed += 1
        # page 1 has 2 chunks, page 3 has 1, page 2's OCR has 1; page 2 needs OCR
        chunks = 2 * ("ex1" in extracted) + ("ex3" in extracted) + ocred
        ocr_total = int("ex2" in extracted)
        c = counts(
            ex=(3, len(extracted), 0),
            ocr=(ocr_total, int(ocred and ocr_total), 0),
            an=(chunks, analyzed, 0),
        )
        complete = is_complete(3, c)
        percent = next_percent("completed" if complete else "processing", percent, 3, c)
        seen.append(percent)
        assert (percent == 100.0) == complete
    assert seen == sorted(seen)
    assert seen[-1] == 100.0


def test_percent_capped_below_100_and_floored_once_started():
    almost = counts(ex=(3, 3, 0), ocr=(1, 1, 0), an=(4, 4, 0))
    assert next_percent("processing", 0, 3, almost) == 99.0
    assert next_percent("processing", 0, None, counts()) == 1.0
    assert next_percent("queued", 0, None, counts()) == 0.0


def test_failed_and_cancelled_keep_last_percent():
    c = counts(ex=(3, 3, 0), an=(4, 4, 0))
    assert next_percent("failed", 42.5, 3, c) == 42.5
    assert next_percent("cancelled", 17.0, 3, c) == 17.0


# 1 s per page extracted, 2 s per page ocred, 0.5 s per chunk, no overlap; 1 chunk per page.
EVEN = FormatCosts(StageCost(1.0), StageCost(2.0, 0.0, 0.0), StageCost(0.5, 0.0, 1.0))


def test_stages_weigh_their_expected_seconds():
    # 2 pages extracted (2 s), 1 of 2 chunks analyzed (0.5 of 1 s): 2.5 of 3 s.
    without = raw_percent(2, counts(ex=(2, 2, 0), an=(2, 1, 0)), EVEN)
    assert without == pytest.approx(100 * 2.5 / 3)
    # One page awaits OCR (2 s), and its OCR chunks are not announced yet: expected from the
    # job's chunks per page so far blended with the learned one, (2 + 3 * 1) / (1 + 3).
    with_ocr = raw_percent(2, counts(ex=(2, 2, 0), ocr=(1, 0, 0), an=(2, 1, 0)), EVEN)
    assert with_ocr == pytest.approx(100 * 2.5 / (2 + 2 + 0.5 * (2 + 1.25)))
    assert work_of(None, counts(), EVEN) is None


def test_stage_names():
    assert stage_name("queued", None, counts()) == "queued"
    assert stage_name("processing", None, counts()) == "extracting"
    assert stage_name("processing", 2, counts(ex=(2, 1, 0))) == "extracting"
    assert stage_name("processing", 2, counts(ex=(2, 2, 0), ocr=(1, 0, 0))) == "ocr"
    assert stage_name("processing", 2, counts(ex=(2, 2, 0), ocr=(1, 1, 0))) == "analyzing"
    for terminal in ("completed", "failed", "cancelled"):
        assert stage_name(terminal, 2, counts()) == terminal


def test_snapshot_eta_is_the_remaining_expected_work_at_the_observed_rate():
    now = datetime.now(UTC)
    half = counts(ex=(2, 1, 0), an=(1, 1, 0))  # 1 + 0.5 of 1 + 0.5 + 0.5 (expected) s
    common = dict(
        job_id="j",
        seq=1,
        status="processing",
        stage="extracting",
        percent=50.0,
        counts=half,
        pages_total=2,
        stalled=False,
        error=None,
        updated_at=now,
        now=now,
        costs=EVEN,
    )
    # Right on the learned rate: 1.5 s of 3 done in 1.5 s, 1.5 s left.
    on_time = build_snapshot(started_at=now - timedelta(seconds=1.5), **common)
    assert on_time["eta_seconds"] == 2  # round(1.5)
    # Twice as slow as learned: the rate observed counts, tempered by the learned one.
    slow = build_snapshot(started_at=now - timedelta(seconds=3), **common)
    prior = PRIOR_SHARE * 3
    assert slow["eta_seconds"] == round(1.5 * (3 + prior) / (1.5 + prior))
    assert 1.5 < slow["eta_seconds"] < 3
    assert build_snapshot(started_at=None, **common)["eta_seconds"] is None
    ended = build_snapshot(started_at=now, **{**common, "status": "completed"})
    assert ended["eta_seconds"] is None


def test_snapshot_content_ignores_jitter_only():
    base = dict(
        job_id="j",
        status="processing",
        stage="extracting",
        percent=10,
        counts=counts(ex=(3, 1, 0)),
        pages_total=3,
        stalled=False,
        error=None,
    )
    a = build_snapshot(seq=1, updated_at=None, **base)
    b = build_snapshot(seq=2, updated_at=None, **base)
    assert snapshot_content(a) == snapshot_content(b)
    c = build_snapshot(seq=2, updated_at=None, **{**base, "stalled": True})
    assert snapshot_content(a) != snapshot_content(c)
    assert a["final"] is False and a["pages_done"] == 1
    assert a["stages"]["extract"] == {"total": 3, "done": 1, "failed": 0}


async def test_hub_drops_a_slow_subscriber_without_blocking_others():
    hub = Hub(queue_size=2)
    job = uuid.uuid4()
    slow, fast = hub.subscribe(job), hub.subscribe(job)
    for seq in range(1, 4):
        hub.publish(job, {"seq": seq})
        assert (await fast.get(1))["seq"] == seq
    assert slow.overflowed
    assert hub.subscribers(job) == 1
    fast.close()
    assert hub.subscribers(job) == 0
    assert await fast.get(0.01) is None
    await asyncio.sleep(0)


@pytest.mark.parametrize("status", list(JobStatus))
def test_snapshot_is_what_the_contract_describes(status: JobStatus):
    """The hot path builds plain dicts; each is a valid ProgressSnapshot, and its JSON text
    (what the WebSocket sends) reads back as the same model."""
    c = counts(ex=(3, 2, 1), ocr=(1, 0, 0), an=(4, 1, 0))
    now = datetime.now(UTC)
    snapshot = build_snapshot(
        job_id=str(uuid.uuid4()),
        seq=7,
        status=status,
        stage=stage_name(status, 3, c),
        percent=next_percent(status, 10.0, 3, c),
        counts=c,
        pages_total=3,
        stalled=False,
        error=None,
        updated_at=now,
        started_at=now - timedelta(seconds=30),
        now=now,
    )
    model = ProgressSnapshot.model_validate(snapshot)
    assert model.final is status.terminal and model.status is status
    assert ProgressSnapshot.model_validate_json(json.dumps(snapshot)) == model
    assert set(snapshot) == set(ProgressSnapshot.model_fields)
