"""All of the engine's SQL: the call ledger, results, cache, budgets and per-model state.

Money is `numeric` in PostgreSQL and Decimal on the way in; figures come back as float.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from services.analyzer.llm.models import (
    CallOutcome,
    CostLine,
    JobCost,
    UsageLine,
)

CALL_NAMESPACE = uuid.UUID("6f1d3c52-8a57-4f0e-9a43-1c7f0f4b1e11")


def call_id(job_id: uuid.UUID, chunk_id: uuid.UUID, task: str, attempt: int) -> uuid.UUID:
    """Deterministic: the same attempt of the same work is the same row in every process."""
    return uuid.uuid5(CALL_NAMESPACE, f"{job_id}/{chunk_id}/{task}/{attempt}")


def usd(value: float) -> Decimal:
    return Decimal(f"{value:.10f}")


@dataclass(frozen=True)
class BudgetScope:
    """A budget the call must fit in; `label` names it in a sentence ("The budget of $0.50")."""

    scope: str
    limit_usd: float
    label: str


def budget_scopes(
    job_id: uuid.UUID,
    tenant: str,
    job_limit: float | None,
    daily_limit: float | None,
    monthly_limit: float | None,
    today: datetime | None = None,
) -> list[BudgetScope]:
    now = today or datetime.now(UTC)
    scopes = []
    if job_limit is not None:
        scopes.append(BudgetScope(f"job:{job_id}", job_limit, "The budget"))
    if daily_limit is not None:
        scopes.append(
            BudgetScope(
                f"tenant-day:{tenant}:{now:%Y-%m-%d}", daily_limit, "The tenant's daily budget"
            )
        )
    if monthly_limit is not None:
        scopes.append(
            BudgetScope(
                f"tenant-month:{tenant}:{now:%Y-%m}", monthly_limit, "The tenant's monthly budget"
            )
        )
    return scopes


@dataclass
class CallRow:
    job_id: uuid.UUID
    tenant: str
    task: str
    chunk_id: uuid.UUID
    attempt: int
    model: str
    prompt_version: str
    reserved_tokens: int = 0
    reserved_usd: float = 0.0
    budget_scopes: list[BudgetScope] = field(default_factory=list)

    @property
    def call_id(self) -> uuid.UUID:
        return call_id(self.job_id, self.chunk_id, self.task, self.attempt)


@dataclass(frozen=True)
class Settlement:
    outcome: CallOutcome
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    reason: str | None = None


_INSERT_CALL = """
INSERT INTO llm_calls (call_id, job_id, tenant, task, chunk_id, attempt, model, prompt_version,
                       outcome, reason, reserved_tokens, reserved_usd, cost_usd, budget_scopes,
                       settled_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
        CASE WHEN $9 = 'reserved' THEN NULL ELSE now() END)
ON CONFLICT DO NOTHING
"""


class Ledger:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    # --- results and attempts -------------------------------------------------------------

    async def result(self, job_id: uuid.UUID, chunk_id: uuid.UUID, task: str) -> Any | None:
        return await self.pool.fetchrow(
            "SELECT status, result, reason, cost_usd FROM llm_results"
            " WHERE job_id = $1 AND chunk_id = $2 AND task = $3",
            job_id,
            chunk_id,
            task,
        )

    async def next_attempt(self, job_id: uuid.UUID, chunk_id: uuid.UUID, task: str) -> int:
        last = await self.pool.fetchval(
            "SELECT max(attempt) FROM llm_calls WHERE job_id = $1 AND chunk_id = $2 AND task = $3",
            job_id,
            chunk_id,
            task,
        )
        return int(last or 0) + 1

    async def save_result(
        self,
        row: CallRow,
        *,
        status: str,
        result: Any,
        reason: str | None,
        cost_usd: float,
        page: int | None,
        chunk_index: int | None,
        cache: tuple[str, Any] | None = None,
    ) -> Any:
        """Insert the result unless one exists, and the answer into the tenant's cache (a
        (key, answer) pair); returns the stored result (the first write wins).

        Committed without waiting for the disk: a crash that loses this write loses nothing
        but work: the call stays on the ledger and a redelivery analyses the chunk again."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            if cache is not None:
                await conn.execute(
                    "INSERT INTO llm_cache (tenant, cache_key, answer, model)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    row.tenant,
                    cache[0],
                    cache[1],
                    row.model,
                )
            await conn.execute(
                "INSERT INTO llm_results (job_id, chunk_id, task, tenant, page, chunk_index,"
                " status, result, reason, model, prompt_version, cost_usd)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                " ON CONFLICT DO NOTHING",
                row.job_id,
                row.chunk_id,
                row.task,
                row.tenant,
                page,
                chunk_index,
                status,
                result,
                reason,
                row.model,
                row.prompt_version,
                usd(cost_usd),
            )
            return await conn.fetchrow(
                "SELECT status, result, reason, cost_usd FROM llm_results"
                " WHERE job_id = $1 AND chunk_id = $2 AND task = $3",
                row.job_id,
                row.chunk_id,
                row.task,
            )

    async def chunk_results(self, job_id: uuid.UUID, task: str) -> list[Any]:
        return list(
            await self.pool.fetch(
                "SELECT chunk_id, page, chunk_index, status, result FROM llm_results"
                " WHERE job_id = $1 AND task = $2 ORDER BY page, chunk_index, chunk_id",
                job_id,
                task,
            )
        )

    async def chunks_analysed(self, job_id: uuid.UUID) -> int:
        """Chunks of the job with at least one answer or recorded failure."""
        return int(
            await self.pool.fetchval(
                "SELECT count(DISTINCT chunk_id) FROM llm_results"
                " WHERE job_id = $1 AND page IS NOT NULL",
                job_id,
            )
        )

    async def spend_by_chunk(
        self, job_id: uuid.UUID, chunk_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[int, float]]:
        """Tokens (in + out) and USD the job's calls for each chunk took, as recorded: a call
        not settled counts at its reserved worst case."""
        rows = await self.pool.fetch(
            "SELECT chunk_id, sum(input_tokens + output_tokens) AS tokens, sum(cost_usd) AS usd"
            " FROM llm_calls WHERE job_id = $1 AND chunk_id = ANY($2::uuid[]) GROUP BY chunk_id",
            job_id,
            chunk_ids,
        )
        return {r["chunk_id"]: (int(r["tokens"] or 0), float(r["usd"] or 0)) for r in rows}

    async def spend_of_tasks(self, job_id: uuid.UUID, tasks: list[str]) -> tuple[int, float]:
        """Tokens and USD of the job's calls for the given tasks (the document summary's)."""
        row = await self.pool.fetchrow(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS tokens,"
            " coalesce(sum(cost_usd), 0) AS usd FROM llm_calls"
            " WHERE job_id = $1 AND task = ANY($2::text[])",
            job_id,
            tasks,
        )
        assert row is not None
        return int(row["tokens"]), float(row["usd"])

    # --- cache ------------------------------------------------------------------------------

    async def cached_answer(self, tenant: str, key: str) -> Any | None:
        return await self.pool.fetchval(
            "SELECT answer FROM llm_cache WHERE tenant = $1 AND cache_key = $2", tenant, key
        )

    # --- the call ledger --------------------------------------------------------------------

    async def record(self, row: CallRow, outcome: CallOutcome, reason: str | None = None) -> None:
        """A row that spends nothing: a cache hit or a refusal by a budget."""
        await self.pool.execute(
            _INSERT_CALL,
            *self._call_values(row, outcome, reason, cost=Decimal(0), scopes=[]),
        )

    def _call_values(
        self,
        row: CallRow,
        outcome: CallOutcome,
        reason: str | None,
        *,
        cost: Decimal,
        scopes: list[str],
    ) -> tuple[Any, ...]:
        return (
            row.call_id,
            row.job_id,
            row.tenant,
            row.task,
            row.chunk_id,
            row.attempt,
            row.model,
            row.prompt_version,
            str(outcome),
            reason,
            row.reserved_tokens,
            usd(row.reserved_usd),
            cost,
            scopes,
        )

    async def reserve(self, row: CallRow) -> BudgetScope | None:
        """Write the call's row as reserved at its worst case and take that from every budget,
        atomically: all budgets have room, or none is touched and the refusing one is returned
        (the row is then not written; the caller records the refusal)."""
        amount = usd(row.reserved_usd)
        names = sorted(s.scope for s in row.budget_scopes)
        if not names:  # no budget to take from: the row alone
            status = await self.pool.execute(
                _INSERT_CALL,
                *self._call_values(row, CallOutcome.RESERVED, None, cost=amount, scopes=names),
            )
            if status.endswith(" 0"):
                raise AttemptTaken(row.call_id)
            return None
        async with self.pool.acquire() as conn, conn.transaction():
            refused = await self._take_from_budgets(conn, row.budget_scopes, names, amount)
            if refused is not None:
                return refused
            status = await conn.execute(
                _INSERT_CALL,
                *self._call_values(row, CallOutcome.RESERVED, None, cost=amount, scopes=names),
            )
            if status.endswith(" 0"):
                # The same attempt is already on the ledger (another process raced us to it):
                # undo this reservation with the transaction.
                raise AttemptTaken(row.call_id)
        return None

    async def _take_from_budgets(
        self,
        conn: asyncpg.Connection,
        scopes: list[BudgetScope],
        names: list[str],
        amount: Decimal,
    ) -> BudgetScope | None:
        await conn.executemany(
            "INSERT INTO llm_budgets (scope, limit_usd) VALUES ($1, $2)"
            " ON CONFLICT (scope) DO UPDATE SET limit_usd = EXCLUDED.limit_usd"
            " WHERE llm_budgets.limit_usd <> EXCLUDED.limit_usd",
            [(s.scope, usd(s.limit_usd)) for s in sorted(scopes, key=lambda s: s.scope)],
        )
        # Locked in name order, so two processes reserving across the same budgets never deadlock.
        rows = await conn.fetch(
            "SELECT scope, limit_usd, spent_usd FROM llm_budgets WHERE scope = ANY($1)"
            " ORDER BY scope FOR UPDATE",
            names,
        )
        by_name = {s.scope: s for s in scopes}
        for budget in rows:
            if budget["spent_usd"] + amount > budget["limit_usd"]:
                return by_name[budget["scope"]]
        await conn.execute(
            "UPDATE llm_budgets SET spent_usd = spent_usd + $2, updated_at = now()"
            " WHERE scope = ANY($1)",
            names,
            amount,
        )
        return None

    async def settle(self, call: uuid.UUID, settlement: Settlement) -> None:
        """Replace a reserved row's worst case with what the call really cost, in the row and in
        every budget it reserved from. A row already settled is left alone.

        Committed without waiting for the disk: a crash that loses a settlement leaves the
        row (and the budgets) at the reserved worst case, which never undercounts; the
        reservation itself is committed durably before the call is sent."""
        cost = usd(settlement.cost_usd)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            reserved = await conn.fetchrow(
                "UPDATE llm_calls SET outcome = $2, reason = $3, input_tokens = $4,"
                " output_tokens = $5, cached_tokens = $6, cost_usd = $7, latency_ms = $8,"
                " settled_at = now()"
                " WHERE call_id = $1 AND outcome = 'reserved'"
                " RETURNING reserved_usd, budget_scopes",
                call,
                str(settlement.outcome),
                settlement.reason,
                settlement.input_tokens,
                settlement.output_tokens,
                settlement.cached_tokens,
                cost,
                settlement.latency_ms,
            )
            if reserved is not None and reserved["budget_scopes"]:
                # Budget rows locked in name order, as reserve() locks them: no deadlock.
                await conn.execute(
                    "UPDATE llm_budgets b SET spent_usd = b.spent_usd - $2 + $3, updated_at = now()"
                    " FROM (SELECT scope FROM llm_budgets WHERE scope = ANY($1)"
                    " ORDER BY scope FOR UPDATE) locked WHERE b.scope = locked.scope",
                    sorted(reserved["budget_scopes"]),
                    reserved["reserved_usd"],
                    cost,
                )

    async def relabel(self, call: uuid.UUID, outcome: CallOutcome, reason: str) -> None:
        """A settled call whose answer was not usable: 'retried' (asked again) or 'failed'."""
        await self.pool.execute(
            "UPDATE llm_calls SET outcome = $2, reason = $3 WHERE call_id = $1 AND outcome = 'ok'",
            call,
            str(outcome),
            reason,
        )

    # --- reports ----------------------------------------------------------------------------

    async def job_cost(self, job_id: uuid.UUID) -> JobCost:
        rows = await self.pool.fetch(
            "SELECT task, model, outcome, count(*) AS calls, sum(input_tokens) AS input_tokens,"
            " sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens,"
            " sum(cost_usd)::float8 AS cost_usd"
            " FROM llm_calls WHERE job_id = $1 GROUP BY task, model, outcome",
            job_id,
        )
        total = JobCost(job_id=job_id)
        for r in rows:
            line = _line(r)
            _add(total, line)
            _add(total.by_task.setdefault(r["task"], CostLine()), line)
            _add(total.by_model.setdefault(r["model"], CostLine()), line)
            total.by_outcome[r["outcome"]] = total.by_outcome.get(r["outcome"], 0) + line.calls
        return total

    async def usage(self, tenant: str | None, since: datetime) -> list[UsageLine]:
        rows = await self.pool.fetch(
            "SELECT tenant, (created_at AT TIME ZONE 'UTC')::date AS day, model,"
            " count(*) AS calls, sum(input_tokens) AS input_tokens,"
            " sum(output_tokens) AS output_tokens, sum(cached_tokens) AS cached_tokens,"
            " sum(cost_usd)::float8 AS cost_usd"
            " FROM llm_calls WHERE created_at >= $1 AND ($2::text IS NULL OR tenant = $2)"
            " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            since,
            tenant,
        )
        return [
            UsageLine(tenant=r["tenant"], day=r["day"], model=r["model"], **_line(r).model_dump())
            for r in rows
        ]


class AttemptTaken(Exception):
    """Another process wrote this attempt's row first."""


def _line(r: Any) -> CostLine:
    return CostLine(
        calls=int(r["calls"]),
        input_tokens=int(r["input_tokens"] or 0),
        output_tokens=int(r["output_tokens"] or 0),
        cached_tokens=int(r["cached_tokens"] or 0),
        cost_usd=float(r["cost_usd"] or 0),
    )


def _add(total: CostLine, line: CostLine) -> None:
    total.calls += line.calls
    total.input_tokens += line.input_tokens
    total.output_tokens += line.output_tokens
    total.cached_tokens += line.cached_tokens
    total.cost_usd += line.cost_usd
