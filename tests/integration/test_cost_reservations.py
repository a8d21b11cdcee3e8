"""Reservations batched per commit (services/analyzer/llm/reservations.py) against real
PostgreSQL: calls reserving at the same moment share one transaction and still get exactly
what one-by-one reservations in their order would get (budgets never overspent, refusals
naming the spent budget), and a row already on the ledger is refused alone."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from services.analyzer.llm import reservations
from services.analyzer.llm.ledger import AttemptTaken, CallRow, Ledger, budget_scopes
from services.analyzer.llm.reservations import ReservationBatcher

pytestmark = pytest.mark.integration


def call(job_id: uuid.UUID, tenant: str, limit: float | None, cost: float = 0.1) -> CallRow:
    return CallRow(
        job_id=job_id,
        tenant=tenant,
        task="summary",
        chunk_id=uuid.uuid4(),
        attempt=1,
        model="m",
        prompt_version="summary.v1",
        reserved_tokens=100,
        reserved_usd=cost,
        budget_scopes=budget_scopes(job_id, tenant, limit, None, None),
    )


def counting_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    together = reservations.reserve_together

    async def counted(ledger: Ledger, rows: list[CallRow]) -> Any:
        sizes.append(len(rows))
        return await together(ledger, rows)

    monkeypatch.setattr(reservations, "reserve_together", counted)
    return sizes


async def test_concurrent_reservations_share_a_commit_and_never_overspend(
    db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = counting_batches(monkeypatch)
    batcher = ReservationBatcher(Ledger(db_pool))
    job_id, tenant = uuid.uuid4(), f"t-{uuid.uuid4().hex[:6]}"
    rows = [call(job_id, tenant, limit=0.45) for _ in range(10)]  # room for 4 calls of $0.10
    answers = await asyncio.gather(*(batcher.reserve(r) for r in rows))

    assert sum(a is None for a in answers) == 4
    refused = [a for a in answers if a is not None]
    assert len(refused) == 6 and {a.scope for a in refused} == {f"job:{job_id}"}
    assert sum(sizes) >= 9 and max(sizes) > 1  # shared commits (the first may go alone)
    spent = await db_pool.fetchval(
        "SELECT spent_usd FROM llm_budgets WHERE scope = $1", f"job:{job_id}"
    )
    assert spent == Decimal("0.4")
    on_ledger = await db_pool.fetchval(
        "SELECT count(*) FROM llm_calls WHERE job_id = $1 AND outcome = 'reserved'", job_id
    )
    assert on_ledger == 4


async def test_an_attempt_already_on_the_ledger_is_refused_alone(db_pool: asyncpg.Pool) -> None:
    ledger = Ledger(db_pool)
    batcher = ReservationBatcher(ledger)
    job_id, tenant = uuid.uuid4(), f"t-{uuid.uuid4().hex[:6]}"
    taken = call(job_id, tenant, limit=10)
    assert await ledger.reserve(taken) is None  # another process wrote this attempt first
    rows = [taken, call(job_id, tenant, limit=10), call(job_id, tenant, limit=10)]
    answers = await asyncio.gather(*(batcher.reserve(r) for r in rows), return_exceptions=True)

    assert isinstance(answers[0], AttemptTaken)
    assert answers[1:] == [None, None]
    spent = await db_pool.fetchval(
        "SELECT spent_usd FROM llm_budgets WHERE scope = $1", f"job:{job_id}"
    )
    assert spent == Decimal("0.3")  # the first reservation and the two new ones, once each


async def test_calls_without_a_budget_are_batched_too(db_pool: asyncpg.Pool) -> None:
    batcher = ReservationBatcher(Ledger(db_pool))
    job_id = uuid.uuid4()
    rows = [call(job_id, "free", limit=None) for _ in range(5)]
    assert await asyncio.gather(*(batcher.reserve(r) for r in rows)) == [None] * 5
    count = await db_pool.fetchval("SELECT count(*) FROM llm_calls WHERE job_id = $1", job_id)
    assert count == 5
