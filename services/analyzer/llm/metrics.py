"""Prometheus metrics of the LLM engine, by model and tenant."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

LLM_CALLS = Counter(
    "docpipe_llm_calls_total",
    "Ledger rows by model and outcome (ok, retried, failed, cache_hit, cancelled, over_budget)",
    ["model", "outcome"],
)
LLM_TOKENS = Counter(
    "docpipe_llm_tokens_total",
    "Tokens the model server reported, by model, tenant and kind (input, output, cached)",
    ["model", "tenant", "kind"],
)
LLM_COST = Counter(
    "docpipe_llm_cost_usd_total",
    "Cost of settled model calls in USD (at the configured price), by model and tenant",
    ["model", "tenant"],
)
LLM_MISCONFIGURED = Gauge(
    "docpipe_llm_model_misconfigured",
    "1 while a model is not called because its server refused the key (401/403)",
    ["model"],
)
LLM_TENANT_BUDGET = Gauge(
    "docpipe_llm_tenant_budget_usd",
    "Each tenant's budget in USD by period (day, month) as configured; absent when unlimited",
    ["period"],
)


def set_tenant_budgets(daily_usd: float | None, monthly_usd: float | None) -> None:
    """Export the configured per-tenant budgets (the budget-burn alert compares spend to them)."""
    for period, limit in (("day", daily_usd), ("month", monthly_usd)):
        if limit is None:
            with contextlib.suppress(KeyError):  # never set
                LLM_TENANT_BUDGET.remove(period)
        else:
            LLM_TENANT_BUDGET.labels(period=period).set(limit)
