"""After a write, in its transaction: the batches of the jobs it changed get their aggregate
recomputed (one statement for every such batch) and their stream messages recorded.

Jobs without a batch cost one attribute check each. A batch's stream carries each of its
jobs' updates and, when what a client sees of the aggregate changed, the new aggregate; the
messages reach the job outcomes (the first job of each batch carries them), to be pushed after
commit with the job updates.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from services.progress.arithmetic import Snapshot
from services.progress.batches import BatchChange, JobSums, plan_change
from services.progress.store import batches as batch_store

if TYPE_CHECKING:  # lifecycle calls refresh from its sweep
    from services.progress.lifecycle import JobWrite


def _touched(jobs: Iterable[JobWrite]) -> dict[uuid.UUID, list[JobWrite]]:
    """The jobs with a batch and a new update, by batch."""
    touched: dict[uuid.UUID, list[JobWrite]] = defaultdict(list)
    for job in jobs:
        batch_id = job.row.get("batch_id")
        if batch_id is not None and job.outcome.updates:
            touched[batch_id].append(job)
    return touched


def _updates_of(jobs: list[JobWrite]) -> list[Snapshot]:
    """The jobs' new updates (an outcome may be shared by several jobs: the sweep's is)."""
    mine = {str(j.job_id) for j in jobs}
    seen: set[tuple[str, int]] = set()
    updates: list[Snapshot] = []
    for job in jobs:
        for update in job.outcome.updates:
            key = (update["job_id"], update["seq"])
            if update["job_id"] in mine and key not in seen:
                seen.add(key)
                updates.append(update)
    return updates


async def refresh(conn: asyncpg.Connection, jobs: Iterable[JobWrite], now: datetime) -> None:
    """Recompute the aggregates of the batches these jobs belong to (call after the job rows
    and updates are written, with the job rows locked)."""
    touched = _touched(jobs)
    if not touched:
        return
    rows = await batch_store.lock_batches(conn, list(touched))
    if not rows:
        return
    sums = await batch_store.sum_jobs(conn, sorted(rows))
    changes: list[BatchChange] = []
    for batch_id in sorted(rows):
        members = touched[batch_id]
        change = plan_change(
            batch_id, rows[batch_id], sums.get(batch_id, JobSums()), _updates_of(members), now
        )
        if change is not None:
            changes.append(change)
            members[0].outcome.batch_messages.extend(change.messages)
    await batch_store.save_batches(conn, changes, now)
