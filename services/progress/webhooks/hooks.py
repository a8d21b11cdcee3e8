"""The hook progress calls where it saves job rows: queue the webhook events of the jobs
that ended in this write, in the same transaction."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import asyncpg

from services.progress.arithmetic import Snapshot
from services.progress.store import webhooks as webhook_store


async def enqueue_ended(conn: asyncpg.Connection, updates: Iterable[Snapshot]) -> None:
    """`updates`: the write's new snapshots; a final one is a job that just ended. Costs
    nothing when none did."""
    ended = [uuid.UUID(u["job_id"]) for u in updates if u["final"]]
    if ended:
        await webhook_store.enqueue_job_events(conn, ended)
