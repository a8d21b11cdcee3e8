"""The per-tenant budgets the budget-burn alert compares spend with are exported as configured,
and are +Inf when a budget is unlimited (always served: the dashboard and the alert read them,
and no spend is more than an unlimited budget)."""

from __future__ import annotations

import math

from prometheus_client import REGISTRY

from services.analyzer.llm import metrics


def budget(period: str) -> float | None:
    return REGISTRY.get_sample_value("docpipe_llm_tenant_budget_usd", {"period": period})


def test_the_tenant_budgets_are_exported_as_configured() -> None:
    metrics.set_tenant_budgets(25.0, None)
    assert budget("day") == 25.0 and budget("month") == math.inf
    metrics.set_tenant_budgets(None, 500.0)
    assert budget("day") == math.inf and budget("month") == 500.0
    metrics.set_tenant_budgets(None, None)
    assert budget("day") == math.inf and budget("month") == math.inf


def test_every_llm_series_is_served_from_start_up_at_zero() -> None:
    metrics.register("start-model", ["start-tenant"], None, None)
    sample = REGISTRY.get_sample_value
    for outcome in ("ok", "failed", "over_budget"):
        assert sample("docpipe_llm_calls_total", {"model": "start-model", "outcome": outcome}) == 0
    for kind in ("input", "output", "cached"):
        labels = {"model": "start-model", "tenant": "start-tenant", "kind": kind}
        assert sample("docpipe_llm_tokens_total", labels) == 0
    cost = {"model": "start-model", "tenant": "start-tenant"}
    assert sample("docpipe_llm_cost_usd_total", cost) == 0
    assert sample("docpipe_llm_model_misconfigured", {"model": "start-model"}) == 0
    assert budget("day") == math.inf
