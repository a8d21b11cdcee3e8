"""The per-tenant budgets the budget-burn alert compares spend with are exported as configured,
and disappear when a budget is unlimited."""

from __future__ import annotations

from prometheus_client import REGISTRY

from services.analyzer.llm import metrics


def budget(period: str) -> float | None:
    return REGISTRY.get_sample_value("docpipe_llm_tenant_budget_usd", {"period": period})


def test_the_tenant_budgets_are_exported_as_configured() -> None:
    metrics.set_tenant_budgets(25.0, None)
    assert budget("day") == 25.0 and budget("month") is None
    metrics.set_tenant_budgets(None, 500.0)
    assert budget("day") is None and budget("month") == 500.0
    metrics.set_tenant_budgets(None, None)
    assert budget("day") is None and budget("month") is None
