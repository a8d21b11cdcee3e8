"""docs/capacity.md: the arithmetic from per-page costs to a day's needs, and the committed
document matching the committed benchmark results."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from scripts import gen_capacity
from scripts.gen_capacity import DOC, RESULTS, plan, render


def per_page(cpu: float, messages: float) -> dict[str, Any]:
    return {
        "pages": 10,
        "cpu_seconds_per_page": {s: cpu for s in gen_capacity.SERVICES},
        "bus_messages_per_page": messages,
        "bus_bytes_per_page": 1000,
        "db_rows_written_per_page": 4,
        "db_bytes_per_page": 2000,
        "db_wal_bytes_per_page": 5000,
        "blob_bytes_per_page": 100_000,
    }


RATES = {"progress_events_per_s": 2000.0, "raw_events_per_s": 4000.0}


def test_a_day_is_derived_from_the_per_page_costs() -> None:
    costs = {"text_pdf": per_page(0.01, 3), "scan": per_page(0.5, 5)}
    p = plan(costs, RATES, "1 million")
    peak = 1_000_000 / 86_400 * gen_capacity.PEAK_FACTOR
    assert p.peak_pages_per_s == pytest.approx(peak)
    mixed_cpu = 0.8 * 0.01 + 0.2 * 0.5
    assert p.cores["ocr"] == pytest.approx(mixed_cpu * peak / gen_capacity.UTILISATION)
    assert p.replicas["ocr"] == max(2, math.ceil(p.cores["ocr"]))
    assert p.bus_messages_per_s == pytest.approx((0.8 * 3 + 0.2 * 5) * peak)
    assert p.blob_gb_per_day == pytest.approx(100_000 * 1_000_000 / 1e9)
    assert p.progress_queue_load == pytest.approx(p.bus_messages_per_s / 4000.0)


def test_progress_replicas_follow_the_event_rate_not_only_cpu() -> None:
    costs = {"text_pdf": per_page(0.0001, 50), "scan": per_page(0.0001, 50)}
    p = plan(costs, RATES, "100 million")
    events = 50 * p.peak_pages_per_s
    assert p.replicas["progress"] == math.ceil(events / (2000.0 * gen_capacity.UTILISATION))
    assert p.replicas["extractor"] == 2  # the floor: a node can go


def test_the_committed_capacity_page_is_made_from_the_committed_results() -> None:
    report = json.loads(RESULTS.read_text())
    assert "capacity" in report["details"], "run make bench: latest.json has no capacity figures"
    assert DOC.read_text() == render(report), "regenerate: python -m scripts.gen_capacity"
