"""The cost endpoints' arithmetic: ledger groups summed per job (by stage, task, model and
outcome, unsettled calls at their reserved worst case) and per tenant and day."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from services.progress.cost_api import job_cost_report, usage_report, usage_window


def group(
    task: str, model: str, outcome: str, calls: int, tin: int, tout: int, usd: float
) -> dict[str, Any]:
    return {
        "stage": "analyze",
        "task": task,
        "model": model,
        "outcome": outcome,
        "calls": calls,
        "input_tokens": tin,
        "output_tokens": tout,
        "cached_tokens": 0,
        "cost_usd": usd,
    }


def test_a_job_report_sums_every_group_and_counts_unsettled_calls() -> None:
    rows = [
        group("summary", "m1", "ok", 3, 300, 60, 0.3),
        group("summary", "m1", "reserved", 1, 0, 0, 0.25),  # answer lost: worst case
        group("classify", "m2", "ok", 2, 100, 4, 0.1),
        group("classify", "m2", "over_budget", 1, 0, 0, 0.0),
    ]
    report = job_cost_report("j", rows)
    assert report.calls == 7
    assert report.tokens == 464 and report.input_tokens == 400 and report.output_tokens == 64
    assert report.cost_usd == pytest.approx(0.65)
    assert report.unsettled_calls == 1
    assert report.by_task["summary"].cost_usd == pytest.approx(0.55)
    assert report.by_task["classify"].calls == 3
    assert report.by_model["m2"].tokens == 104
    assert report.by_outcome["reserved"].cost_usd == pytest.approx(0.25)
    assert report.by_outcome["over_budget"].calls == 1
    assert report.by_stage["analyze"].calls == 7
    assert sum(t.cost_usd for t in report.by_model.values()) == pytest.approx(report.cost_usd)


def test_a_job_without_calls_costs_nothing() -> None:
    report = job_cost_report("j", [])
    assert report.calls == 0 and report.cost_usd == 0.0 and report.by_task == {}


def test_usage_is_summed_per_tenant() -> None:
    day = date(2026, 11, 30)
    rows = [
        {**group("", "m1", "", 2, 10, 5, 0.5), "tenant": "a", "day": day},
        {**group("", "m2", "", 1, 10, 5, 0.25), "tenant": "a", "day": day},
        {**group("", "m1", "", 4, 20, 5, 1.0), "tenant": "b", "day": day},
    ]
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    report = usage_report(rows, now - timedelta(days=1), now, None)
    assert [(line.tenant, line.model) for line in report.lines] == [
        ("a", "m1"),
        ("a", "m2"),
        ("b", "m1"),
    ]
    assert report.by_tenant["a"].cost_usd == pytest.approx(0.75)
    assert report.by_tenant["b"].calls == 4
    assert report.cost_usd == pytest.approx(1.75) and report.tokens == 55


def test_the_usage_window_defaults_to_thirty_days_and_refuses_an_empty_one() -> None:
    now = datetime(2026, 11, 30, 12, 30, tzinfo=UTC)
    start, end = usage_window(None, None, now)
    assert end == now and start == datetime(2026, 10, 31, tzinfo=UTC)
    naive = datetime(2026, 11, 1)
    start, _ = usage_window(naive, None, now)
    assert start.tzinfo is UTC and start.hour == 0
    with pytest.raises(ValueError, match="before"):
        usage_window(now, now, now)
