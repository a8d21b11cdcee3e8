"""What AI analysis cost, from the LLM call ledger (the analyzer's llm_calls rows).

GET /v1/jobs/{job_id}/cost
    The job's totals, and the same figures by stage, task, model and outcome. Calls not yet
    settled (in flight, or whose answer was lost in a crash) count at their reserved worst
    case and are counted in `unsettled_calls`. 404 for an unknown job or another tenant's.
GET /v1/usage[?since=&until=&tenant=]
    Spend per tenant, UTC day and model in [since, until) (default: the last 30 days), with
    totals per tenant. A tenant key sees its own tenant only; an admin key sees every tenant
    (or one, with ?tenant=).

Same keys as the other progress routes (shared/auth.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, status
from pydantic import BaseModel, Field

from services.progress.api import visible_job_or_404
from services.progress.deps import PoolDep
from services.progress.store import costs
from shared.api_docs import invalid_request
from shared.auth import ReadDep

router = APIRouter(tags=["cost"])

# The ledger's outcome of a call written before it was sent and not settled since.
UNSETTLED = "reserved"
DEFAULT_USAGE_DAYS = 30


class CostTotals(BaseModel):
    """Spend of a group of calls. `tokens` is input + output (cached tokens are part of input)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    tokens: int = 0
    cost_usd: float = 0.0


class JobCostReport(CostTotals):
    job_id: str
    unsettled_calls: int = Field(
        default=0,
        description="Calls in flight or whose answer was lost: counted at their reserved worst"
        " case",
    )
    by_stage: dict[str, CostTotals] = Field(default_factory=dict)
    by_task: dict[str, CostTotals] = Field(default_factory=dict)
    by_model: dict[str, CostTotals] = Field(default_factory=dict)
    by_outcome: dict[str, CostTotals] = Field(default_factory=dict)


class UsageLine(CostTotals):
    tenant: str
    day: date
    model: str


class UsageReport(CostTotals):
    since: datetime
    until: datetime
    tenant: str | None = Field(default=None, description="The tenant shown; null: every tenant")
    by_tenant: dict[str, CostTotals] = Field(default_factory=dict)
    lines: list[UsageLine] = Field(default_factory=list)


def _add(total: CostTotals, row: Mapping[str, Any]) -> None:
    total.calls += int(row["calls"])
    total.input_tokens += int(row["input_tokens"])
    total.output_tokens += int(row["output_tokens"])
    total.cached_tokens += int(row["cached_tokens"])
    total.tokens += int(row["input_tokens"]) + int(row["output_tokens"])
    total.cost_usd += float(row["cost_usd"])


def _rounded(total: CostTotals) -> None:
    # Sums of numeric(20,10) figures read as floats: keep the answer free of float dust.
    total.cost_usd = round(total.cost_usd, 10)


def job_cost_report(job_id: str, rows: Iterable[Mapping[str, Any]]) -> JobCostReport:
    """The ledger's groups (stage, task, model, outcome) summed into the job's report."""
    report = JobCostReport(job_id=job_id)
    for row in rows:
        _add(report, row)
        for groups, key in (
            (report.by_stage, row["stage"]),
            (report.by_task, row["task"]),
            (report.by_model, row["model"]),
            (report.by_outcome, row["outcome"]),
        ):
            _add(groups.setdefault(key, CostTotals()), row)
        if row["outcome"] == UNSETTLED:
            report.unsettled_calls += int(row["calls"])
    for total in (
        report,
        *report.by_stage.values(),
        *report.by_task.values(),
        *report.by_model.values(),
        *report.by_outcome.values(),
    ):
        _rounded(total)
    return report


def usage_report(
    rows: Iterable[Mapping[str, Any]], since: datetime, until: datetime, tenant: str | None
) -> UsageReport:
    report = UsageReport(since=since, until=until, tenant=tenant)
    for row in rows:
        line = UsageLine(tenant=row["tenant"], day=row["day"], model=row["model"])
        _add(line, row)
        _rounded(line)
        report.lines.append(line)
        _add(report, row)
        _add(report.by_tenant.setdefault(row["tenant"], CostTotals()), row)
    for total in (report, *report.by_tenant.values()):
        _rounded(total)
    return report


def usage_window(
    since: datetime | None, until: datetime | None, now: datetime
) -> tuple[datetime, datetime]:
    """[since, until) in UTC: until defaults to now, since to 30 days before until's day.
    A time without a zone is UTC. ValueError when the window is empty."""
    end = _utc(until) if until is not None else now
    start = (
        _utc(since)
        if since is not None
        else datetime.combine(end.date(), datetime.min.time(), UTC)
        - timedelta(days=DEFAULT_USAGE_DAYS)
    )
    if start >= end:
        raise ValueError("'since' must be before 'until'.")
    return start, end


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/v1/jobs/{job_id}/cost",
    summary="What a job's AI analysis cost, from the call ledger",
    response_model=JobCostReport,
)
async def job_cost(job_id: str, principal: ReadDep, pool: PoolDep) -> JobCostReport:
    jid = await visible_job_or_404(pool, principal, job_id)
    return job_cost_report(str(jid), await costs.job_cost_lines(pool, jid))


@router.get(
    "/v1/usage",
    summary="AI spend per tenant, day and model (a tenant sees its own)",
    response_model=UsageReport,
)
async def usage(
    principal: ReadDep,
    pool: PoolDep,
    since: Annotated[datetime | None, Query(description="From this time (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Before this time (ISO 8601).")] = None,
    tenant: Annotated[
        str | None, Query(max_length=200, description="Admin keys: one tenant only.")
    ] = None,
) -> UsageReport:
    try:
        start, end = usage_window(since, until, datetime.now(UTC))
    except ValueError as exc:
        raise invalid_request(("query", "since"), str(exc)) from None
    if not principal.all_tenants:  # a tenant's key, or an admin key scoped to one tenant
        if tenant is not None and tenant != principal.tenant:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail="A key sees its own tenant.")
        tenant = principal.tenant
    rows = await costs.usage_lines(pool, tenant, start, end)
    return usage_report(rows, start, end, tenant)
