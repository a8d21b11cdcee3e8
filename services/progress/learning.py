"""Learning the stage costs off the hot path: a completed job's timings are folded into the
shared averages in its follow-up (after its update was pushed), and every replica rereads the
averages into its CostBook now and then (costmodel.BOOK), so the snapshots it builds use
what every replica learned."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import asyncpg
import structlog

from services.progress.costmodel import BOOK, CostBook
from services.progress.models import Outcome
from services.progress.store import stage_costs
from shared.events import JobCompleted

log = structlog.get_logger(__name__)


async def reload(pool: asyncpg.Pool, book: CostBook = BOOK) -> None:
    """Put the learned costs in the book."""
    book.replace(await stage_costs.read_costs(pool))


async def learn_completed(
    pool: asyncpg.Pool,
    outcome: Outcome,
    deadline_seconds: float = 3600.0,
    book: CostBook = BOOK,
) -> None:
    """Fold the timings of the jobs this outcome completed into the stage costs, and reread
    them. `deadline_seconds`: the longest a job may run. Never raises: a lost sample only
    makes the averages a little older."""
    completed = [e.job_id for e in outcome.publish if isinstance(e, JobCompleted)]
    if not completed:
        return
    try:
        if await stage_costs.learn(pool, completed, timedelta(seconds=deadline_seconds)):
            await reload(pool, book)
    except Exception:
        log.exception("could not learn the stage costs of completed jobs")


async def reload_loop(pool: asyncpg.Pool, seconds: float, book: CostBook = BOOK) -> None:
    """Reread the learned costs every `seconds` (what other replicas learned)."""
    while True:
        try:
            await reload(pool, book)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep the costs this process has; the next round retries
            log.exception("could not read the stage costs")
        await asyncio.sleep(seconds)
