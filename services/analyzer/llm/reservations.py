"""Reservations committed together: the calls of this process that reserve at the same moment
share one transaction, so one durable commit (one wait for the disk) and one hold of the
budget rows' locks serve all of them.

Each call is still reserved before it is sent, at its worst case, on the ledger and in every
budget, all or nothing per call, and durably: the guarantees of Ledger.reserve, which a batch
of one uses as it is. Calls are decided in arrival order against the budgets as the earlier
calls of the batch left them, so a batch refuses exactly the calls that one-by-one
reservations in that order would refuse.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal

import asyncpg

from services.analyzer.llm.ledger import (
    _INSERT_CALL,
    AttemptTaken,
    BudgetScope,
    CallRow,
    Ledger,
    usd,
)
from services.analyzer.llm.models import CallOutcome

Reserved = BudgetScope | None | AttemptTaken


class _Conflict(Exception):
    """A row of the batch was already on the ledger: the batch is undone and redone alone."""


class ReservationBatcher:
    """`await reserve(row)`: as Ledger.reserve (None, the refusing budget, or AttemptTaken),
    committed with whatever other reservations are waiting when the last commit ends."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._waiting: list[tuple[CallRow, asyncio.Future[BudgetScope | None]]] = []
        self._committer: asyncio.Task[None] | None = None

    async def reserve(self, row: CallRow) -> BudgetScope | None:
        future: asyncio.Future[BudgetScope | None] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_waiting())
        return await future

    async def _commit_waiting(self) -> None:
        # Reservations arriving during a commit wait for the next one: the batch grows with
        # the disk's latency and the number of calls in flight, never by a timer.
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                answers = await self._reserve_batch([row for row, _ in batch])
            except Exception as exc:  # the database failed: every caller sees it
                answers = [exc] * len(batch)
            for (_, future), answer in zip(batch, answers, strict=True):
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _reserve_batch(self, rows: list[CallRow]) -> list[Reserved | Exception]:
        if len(rows) > 1:
            try:
                return list(await reserve_together(self.ledger, rows))
            except _Conflict:
                pass  # undone: reserve one by one, which tells each row's own answer
        answers: list[Reserved | Exception] = []
        for row in rows:
            try:
                answers.append(await self.ledger.reserve(row))
            except AttemptTaken as exc:
                answers.append(exc)
        return answers


async def reserve_together(ledger: Ledger, rows: list[CallRow]) -> list[BudgetScope | None]:
    """Every row reserved or refused in one transaction (raises _Conflict, having undone it
    all, when a row's attempt is already on the ledger)."""
    scopes = {s.scope: s for row in rows for s in row.budget_scopes}
    async with ledger.pool.acquire() as conn, conn.transaction():
        room = await _lock_budgets(conn, list(scopes.values()))
        taken: dict[str, Decimal] = defaultdict(Decimal)
        answers: list[BudgetScope | None] = []
        for row in rows:
            amount = usd(row.reserved_usd)
            names = sorted(s.scope for s in row.budget_scopes)
            refused = next((n for n in names if taken[n] + amount > room[n]), None)
            if refused is not None:
                answers.append(scopes[refused])
                continue
            status = await conn.execute(
                _INSERT_CALL,
                *ledger._call_values(row, CallOutcome.RESERVED, None, cost=amount, scopes=names),
            )
            if status.endswith(" 0"):
                raise _Conflict(row.call_id)
            for name in names:
                taken[name] += amount
            answers.append(None)
        if taken:
            await conn.executemany(
                "UPDATE llm_budgets SET spent_usd = spent_usd + $2, updated_at = now()"
                " WHERE scope = $1",
                sorted(taken.items()),
            )
    return answers


async def _lock_budgets(conn: asyncpg.Connection, scopes: list[BudgetScope]) -> dict[str, Decimal]:
    """The budgets' rows made and locked in name order (as Ledger.reserve locks them: no
    deadlock); returns each budget's room left."""
    if not scopes:
        return {}
    ordered = sorted(scopes, key=lambda s: s.scope)
    await conn.executemany(
        "INSERT INTO llm_budgets (scope, limit_usd) VALUES ($1, $2)"
        " ON CONFLICT (scope) DO UPDATE SET limit_usd = EXCLUDED.limit_usd"
        " WHERE llm_budgets.limit_usd <> EXCLUDED.limit_usd",
        [(s.scope, usd(s.limit_usd)) for s in ordered],
    )
    rows = await conn.fetch(
        "SELECT scope, limit_usd - spent_usd AS room FROM llm_budgets WHERE scope = ANY($1)"
        " ORDER BY scope FOR UPDATE",
        [s.scope for s in ordered],
    )
    return {r["scope"]: r["room"] for r in rows}
