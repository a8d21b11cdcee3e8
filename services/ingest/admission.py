"""Admission control (docs/decisions/1080): a tenant's jobs beyond its in-flight limit wait,
queued, with their document.uploaded held in the outbox (a `held_uploads` row; the relay
skips it), and are released, in weighted fair turns (services/ingest/fair_share.py), as jobs
end, whichever replica ends them.

Every admission (in the transaction that creates jobs) and every release pass takes one
transaction-scoped advisory lock before it counts, so two replicas never give the same free
slot away twice. A release pass is one short transaction; ingest's loop runs it when a job
ends (the jobs table's trigger NOTIFYs `docpipe_admission`, migration 020) and at least every
admission_poll_seconds, so a lost notice only delays.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from services.ingest.errors import PriorityAboveCeiling, TooManyPendingJobs
from services.ingest.fair_share import (
    TenantLimits,
    TenantLoad,
    release_order,
    releases_by_tenant,
    start_now,
)
from services.ingest.outbox import publish_many
from shared.bus import Bus

log = structlog.get_logger(__name__)

CHANNEL = "docpipe_admission"
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('docpipe-admission', 0))"

# A job in flight: published (not held), not ended, and processed itself (a duplicate's
# follower waits for its source and costs nothing).
_IN_FLIGHT = """
    j.status IN ('queued', 'processing') AND j.deduplicated_from IS NULL
    AND NOT EXISTS (SELECT 1 FROM held_uploads h WHERE h.job_id = j.job_id)
"""


def check_priority(limits: TenantLimits, tenant: str, priority: int, loc: Sequence[str]) -> None:
    """Refuse (422) a priority above the tenant's ceiling."""
    ceiling = limits.ceiling_of(tenant)
    if priority > ceiling:
        raise PriorityAboveCeiling(tuple(loc), priority, ceiling)


async def check_room(pool: asyncpg.Pool, limits: TenantLimits, tenant: str, retry: int) -> None:
    """Refuse (429) a submit when the tenant already has its limit of jobs queued and in
    flight. Read before the body is taken, without the lock: concurrent submits may pass it
    together (at most the tenant's concurrent uploads beyond the limit)."""
    limit = limits.pending_of(tenant)
    pending: int = await pool.fetchval(
        "SELECT count(*) FROM jobs WHERE tenant = $1 AND status IN ('queued', 'processing') "
        "AND deduplicated_from IS NULL",
        tenant,
    )
    if pending >= limit:
        raise TooManyPendingJobs(limit, retry)


async def admit(
    conn: asyncpg.Connection, limits: TenantLimits, tenant: str, outbox_ids: Sequence[int]
) -> int:
    """Inside the transaction that created a tenant's jobs and their document.uploaded rows
    (`outbox_ids`, in submitted order): hold those that may not start now. Returns how many
    were held."""
    if not outbox_ids:
        return 0
    await conn.execute(_LOCK)
    row = await conn.fetchrow(
        f"""
        SELECT count(*) FILTER (WHERE j.tenant = $1) AS tenant_in_flight,
               count(*) AS all_in_flight,
               (SELECT count(*) FROM held_uploads WHERE tenant = $1) AS held
        FROM jobs j WHERE ($2 OR j.tenant = $1) AND {_IN_FLIGHT}
        """,
        tenant,
        limits.global_inflight > 0,
    )
    assert row is not None
    new = len(outbox_ids)
    # The new jobs are already rows, not yet held: they are in the counts.
    starting = start_now(
        new,
        limit=limits.inflight_of(tenant),
        in_flight=row["tenant_in_flight"] - new,
        held=row["held"],
        global_free=limits.global_free(row["all_in_flight"] - new),
    )
    if starting == new:
        return 0
    await conn.execute(
        """
        INSERT INTO held_uploads (outbox_id, job_id, tenant, priority, size_bytes)
        SELECT o.id, (o.payload->>'job_id')::uuid, $2, o.priority,
               (o.payload->>'size_bytes')::bigint
        FROM outbox o WHERE o.id = ANY($1::bigint[])
        ORDER BY o.id OFFSET $3
        """,
        list(outbox_ids),
        tenant,
        starting,
    )
    return new - starting


async def forget_held(conn: asyncpg.Connection, job_ids: Sequence[Any]) -> None:
    """A cancelled job that is still held never starts: its document.uploaded is deleted
    (with its held row) in the cancel's transaction."""
    await conn.execute(
        "DELETE FROM outbox o USING held_uploads h "
        "WHERE h.outbox_id = o.id AND h.job_id = ANY($1::uuid[])",
        list(job_ids),
    )


# Only the held jobs of this process's bus (their outbox row's bus_prefix, as the relay reads
# it): stacks that share one database on different buses (the tests; a deployment with two
# buses) each release their own, at their own limits.
_THIS_BUS = "(o.bus_prefix IS NULL OR o.bus_prefix = current_setting('docpipe.bus_prefix', true))"

_LOADS = f"""
WITH held AS (
    SELECT h.tenant, count(*) AS held FROM held_uploads h JOIN outbox o ON o.id = h.outbox_id
    WHERE {_THIS_BUS} GROUP BY h.tenant
)
SELECT held.tenant, held.held,
       (SELECT count(*) FROM jobs j WHERE j.tenant = held.tenant AND {_IN_FLIGHT}) AS in_flight
FROM held
"""

# Within a tenant's turn: the highest priority, then the smallest document, its size counting
# for less the longer it has waited (as the extractor's scheduler does, services/extractor/
# scheduler.py), so a large document is not starved by a stream of small ones.
AGING_SECONDS = 60

_RELEASE = f"""
DELETE FROM held_uploads h USING (
    SELECT next.outbox_id
    FROM unnest($1::text[], $2::int[]) AS t(tenant, n)
    CROSS JOIN LATERAL (
        SELECT w.outbox_id FROM held_uploads w JOIN outbox o ON o.id = w.outbox_id
        WHERE w.tenant = t.tenant AND {_THIS_BUS}
        ORDER BY w.priority DESC,
                 coalesce(w.size_bytes, 0)
                     / (1 + extract(epoch FROM clock_timestamp() - w.held_at) / {AGING_SECONDS}),
                 w.held_at, w.outbox_id
        LIMIT t.n
    ) AS next
) AS pick
WHERE h.outbox_id = pick.outbox_id
RETURNING h.outbox_id
"""


async def release_once(pool: asyncpg.Pool, limits: TenantLimits) -> list[int]:
    """One release pass: the held jobs that may start now, released in fair turns; returns
    their outbox ids (committed: the outbox relay publishes them if the caller does not)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK)
        rows = await conn.fetch(_LOADS)
        if not rows:
            return []
        global_free = None
        if limits.global_inflight > 0:
            all_in_flight = await conn.fetchval(f"SELECT count(*) FROM jobs j WHERE {_IN_FLIGHT}")
            global_free = limits.global_free(all_in_flight)
        loads = [
            TenantLoad(
                r["tenant"],
                r["in_flight"],
                r["held"],
                limits.inflight_of(r["tenant"]),
                limits.weight_of(r["tenant"]),
            )
            for r in rows
        ]
        counts = releases_by_tenant(release_order(loads, global_free))
        if not counts:
            return []
        released = await conn.fetch(_RELEASE, list(counts), list(counts.values()))
    return [r["outbox_id"] for r in released]


async def _release_and_publish(pool: asyncpg.Pool, bus: Bus, limits: TenantLimits) -> None:
    ids = await release_once(pool, limits)
    if ids:
        published = await publish_many(pool, bus, ids)
        log.info("held jobs released", released=len(ids), published=published)


async def run_admission(
    pool: asyncpg.Pool, bus: Bus, limits: TenantLimits, *, poll_seconds: float
) -> None:
    """Release held jobs for the life of the service: when a job ends (NOTIFY) and at least
    every poll_seconds. A failing pass (database away) is tried again after poll_seconds."""
    wake = asyncio.Event()

    def on_notice(*_: object) -> None:
        wake.set()

    while True:
        try:
            async with pool.acquire() as listener:
                await listener.add_listener(CHANNEL, on_notice)
                try:
                    while True:
                        wake.clear()
                        await _release_and_publish(pool, bus, limits)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(wake.wait(), poll_seconds)
                finally:
                    with contextlib.suppress(Exception):
                        await listener.remove_listener(CHANNEL, on_notice)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("admission pass failed", error=repr(exc))
            await asyncio.sleep(poll_seconds)
