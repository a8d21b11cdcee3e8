"""Per-model state shared by every analyzer process: rate limits (a sliding window of the
last minute's admissions), the "not before" a 429 sets, and the misconfigured flag."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Admission:
    """A rate-limit answer: admitted, or wait this long; or the model is misconfigured."""

    wait_seconds: float = 0.0
    misconfigured: str | None = None


_STATE = (
    "SELECT misconfigured, extract(epoch FROM not_before - clock_timestamp())::float8 AS wait"
    " FROM llm_models WHERE model = $1"
)


def _blocked(state: Any) -> Admission | None:
    """Misconfigured, or slowed down by a 429; None when the model may be called."""
    if state is None:
        return None
    if state["misconfigured"]:
        return Admission(misconfigured=state["misconfigured"])
    if state["wait"] is not None and state["wait"] > 0:
        return Admission(wait_seconds=float(state["wait"]))
    return None


# An admission counts for the window plus this long, so the moments between admission and
# the request's arrival never put more than the limit in any window measured at the server.
ARRIVAL_MARGIN_SECONDS = 0.5


class ModelState:
    def __init__(self, pool: asyncpg.Pool, window_seconds: float = 60.0) -> None:
        self.pool = pool
        self.window_seconds = window_seconds

    # --- per-model state --------------------------------------------------------------------

    async def admit(self, model: str, tokens: int, rpm: int, tpm: int) -> Admission:
        """Admit one call under the model's shared limits, or say how long to wait."""
        if not (rpm or tpm):  # nothing to count: one read of the model's state
            state = await self.pool.fetchrow(_STATE, model)
            return _blocked(state) or Admission()
        async with self.pool.acquire() as conn, conn.transaction():
            # Not waiting for the disk: the model's row lock is held by every process's
            # admissions, one after another. A database crash may lose the last admissions
            # (the server then answers 429 at worst, which the engine honours).
            await conn.execute("SET LOCAL synchronous_commit TO OFF")
            await conn.execute(
                "INSERT INTO llm_models (model) VALUES ($1) ON CONFLICT DO NOTHING", model
            )
            state = await conn.fetchrow(_STATE + " FOR UPDATE", model)
            blocked = _blocked(state)
            if blocked is not None:
                return blocked
            return await self._admit_in_window(conn, model, tokens, rpm, tpm)

    async def _admit_in_window(
        self, conn: asyncpg.Connection, model: str, tokens: int, rpm: int, tpm: int
    ) -> Admission:
        counted = self.window_seconds + ARRIVAL_MARGIN_SECONDS
        await conn.execute(
            "DELETE FROM llm_rate_admissions WHERE model = $1"
            " AND admitted_at < clock_timestamp() - make_interval(secs => $2)",
            model,
            counted,
        )
        window = await conn.fetch(
            "SELECT tokens, extract(epoch FROM admitted_at + make_interval(secs => $2)"
            " - clock_timestamp())::float8 AS leaves_in"
            " FROM llm_rate_admissions WHERE model = $1"
            " AND admitted_at > clock_timestamp() - make_interval(secs => $2)"
            " ORDER BY admitted_at",
            model,
            counted,
        )
        wait = _window_wait(window, tokens, rpm, tpm)
        if wait > 0:
            return Admission(wait_seconds=wait)
        await conn.execute(
            "INSERT INTO llm_rate_admissions (model, tokens) VALUES ($1, $2)", model, tokens
        )
        return Admission()

    async def slow_down(self, model: str, seconds: float) -> None:
        """A 429 slows every process's calls to the model, not one call."""
        await self.pool.execute(
            "INSERT INTO llm_models (model, not_before)"
            " VALUES ($1, clock_timestamp() + make_interval(secs => $2))"
            " ON CONFLICT (model) DO UPDATE SET not_before ="
            " greatest(llm_models.not_before, EXCLUDED.not_before)",
            model,
            seconds,
        )

    async def mark_misconfigured(self, model: str, reason: str) -> None:
        await self.pool.execute(
            "INSERT INTO llm_models (model, misconfigured, misconfigured_at) VALUES ($1, $2, now())"
            " ON CONFLICT (model) DO UPDATE SET misconfigured = $2, misconfigured_at = now()",
            model,
            reason,
        )

    async def clear_misconfigured(self, model: str) -> None:
        await self.pool.execute(
            "UPDATE llm_models SET misconfigured = NULL, misconfigured_at = NULL WHERE model = $1",
            model,
        )

    async def misconfigured_models(self) -> dict[str, str]:
        rows = await self.pool.fetch(
            "SELECT model, misconfigured FROM llm_models WHERE misconfigured IS NOT NULL"
        )
        return {r["model"]: r["misconfigured"] for r in rows}


def _window_wait(window: list[Any], tokens: int, rpm: int, tpm: int) -> float:
    """Seconds until a call of `tokens` fits the last minute's admissions (0: it fits now).
    A call larger than the whole tokens/min limit goes alone into an empty window."""
    count = len(window)
    used = sum(int(r["tokens"]) for r in window)
    wait = 0.0
    if rpm and count + 1 > rpm:
        wait = max(wait, float(window[count - rpm]["leaves_in"]))
    if tpm and window and used + tokens > tpm:
        # The oldest admissions must leave until the rest plus this call fit.
        remaining = used
        for admission in window:
            remaining -= int(admission["tokens"])
            if remaining + tokens <= tpm or remaining == 0:
                wait = max(wait, float(admission["leaves_in"]))
                break
    return max(wait, 0.0) + (0.01 if wait > 0 else 0.0)
