"""Prometheus metrics of the LLM engine, by model and tenant."""

from __future__ import annotations

import math
from collections.abc import Iterable

from prometheus_client import Counter, Gauge

from services.analyzer.llm.models import CallOutcome

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
    "Each tenant's budget in USD by period (day, month) as configured; +Inf when unlimited",
    ["period"],
)


TOKEN_KINDS = ("input", "output", "cached")
# The outcomes a settled call is counted under (a reservation is not a call yet).
CALL_OUTCOMES = tuple(o.value for o in CallOutcome if o is not CallOutcome.RESERVED)


def set_tenant_budgets(daily_usd: float | None, monthly_usd: float | None) -> None:
    """Export the configured per-tenant budgets (the budget-burn alert compares spend to them).
    No limit is +Inf: always served, and no spend is ever more than it."""
    for period, limit in (("day", daily_usd), ("month", monthly_usd)):
        LLM_TENANT_BUDGET.labels(period=period).set(math.inf if limit is None else limit)


def register(model: str, tenants: Iterable[str], daily_usd: float | None,
             monthly_usd: float | None) -> None:  # fmt: skip
    """Serve every LLM series the dashboard and alerts read from start-up, at zero (a labelled
    series appears only once its labels are used): the deployment's model by outcome, the
    configured tenants' tokens and cost, and the budgets."""
    for outcome in CALL_OUTCOMES:
        LLM_CALLS.labels(model=model, outcome=outcome)
    for tenant in tenants:
        for kind in TOKEN_KINDS:
            LLM_TOKENS.labels(model=model, tenant=tenant, kind=kind)
        LLM_COST.labels(model=model, tenant=tenant)
    LLM_MISCONFIGURED.labels(model=model)
    set_tenant_budgets(daily_usd, monthly_usd)
