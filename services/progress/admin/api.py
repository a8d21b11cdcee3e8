"""Admin-only data for the admin page: every tenant's jobs, totals, queue depths, and a live
fleet-wide stream of job updates. Every route needs an admin key (401 without a key, 403 for a
tenant key).

GET /v1/admin/jobs?status=&q=&limit=
    {"items": [job], "limit"}: newest first. status: queued|processing|completed|failed|
    cancelled, or active (queued + processing) or stalled (active and stalled). q matches a job
    id prefix, or part of the filename or tenant (case-insensitive). Each job carries its
    per-stage counts ("stages": {extract|ocr|analyze: {total, done, failed}}) and its seq, so
    a client can tell which of a listed row and a streamed update is newer, and its AI spend
    from the call ledger ("tokens", "cost_usd", as in progress snapshots).
GET /v1/admin/totals
    {"by_status": {status: n}, "total", "stalled", "oldest_active_at", "window_minutes",
     "last_window": {"submitted", "completed", "failed", "pages", "completed_per_minute"}}
GET /v1/admin/queues
    {"queues": [{"queue", "messages", "consumers"}], "prefix", "age_seconds"}: the broker-stats
    loop's last reading (empty, age null, until its first one; queues missing on the broker
    are left out).
WS  /v1/admin/events?ticket=<ticket from POST /v1/admin/ws-ticket>
    One JSON text frame per progress update of any job, as this process pushes it: the job's
    snapshot (as on /v1/jobs/{id}/events) plus "tenant", "filename" and "created_at". Updates
    applied by another progress replica are not seen here (the page also polls). The key in
    the Authorization header also works (?token=<key> only in dev). Close codes: 4401 no
    valid key or ticket, 4403 not an admin key for every tenant, 1013 the client fell behind,
    1011 a server error (both: reconnect).
"""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect

from services.progress import store
from services.progress.arithmetic import Counts, Snapshot, pages_done
from services.progress.broker_stats import latest_queue_stats, latest_queue_stats_age
from services.progress.deps import CtxDep, HubDep, PoolDep
from services.progress.hub import Subscription
from services.progress.models import AdminJobList
from services.progress.seq_stream import pump_until_disconnect
from services.progress.store import costs
from shared.auth import AdminDep, accept_websocket
from shared.events import JobStatus
from shared.keys import Scope
from shared.tickets import SubjectKind

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class JobFilter(StrEnum):
    """A job status, or active (queued or processing), or stalled (active and stalled)."""

    QUEUED = JobStatus.QUEUED.value
    PROCESSING = JobStatus.PROCESSING.value
    COMPLETED = JobStatus.COMPLETED.value
    FAILED = JobStatus.FAILED.value
    CANCELLED = JobStatus.CANCELLED.value
    ACTIVE = "active"
    STALLED = "stalled"


# Totals: the throughput window.
WINDOW_MINUTES = 5
# The live stream: how long to wait for an update before checking for a fallen-behind client,
# and how many queued updates to send per round (their job details are read in one query).
STREAM_POLL_SECONDS = 5.0
STREAM_BATCH = 200
# Job details the stream remembers per connection, so a busy job costs one lookup.
STREAM_META_CACHE = 10_000

# The admin stream is one subject: a ticket for it names this.
ADMIN_EVENTS_SUBJECT = "*"
WS_TRY_AGAIN_LATER = 1013
WS_INTERNAL_ERROR = 1011


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# --- jobs ---------------------------------------------------------------------------------


def job_item(row: asyncpg.Record, counts: Counts) -> dict[str, Any]:
    return {
        "job_id": str(row["job_id"]),
        "tenant": row["tenant"],
        "filename": row["filename"],
        "status": row["status"],
        "stage": row["stage"],
        "percent": round(float(row["percent"]), 1),
        "seq": row["seq"],
        "format": row["format"],
        "pages_total": row["pages_total"],
        "pages_done": max(0, pages_done(counts)),
        "stages": counts.as_dict(),
        "stalled": row["stalled"],
        "error": row["error"],
        "partial": row["partial"],
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row["started_at"]),
        "updated_at": _iso(row["updated_at"]),
        "finished_at": _iso(row["finished_at"]),
    }


def with_spend(item: dict[str, Any], spend: tuple[int, float] | None) -> dict[str, Any]:
    """The job's AI spend from the ledger (named as in progress snapshots, so a streamed
    update replaces it live): tokens in + out and USD, 0 for a job without a model call."""
    tokens, cost = spend or (0, 0.0)
    return {**item, "tokens": tokens, "cost_usd": round(cost, 6)}


@router.get(
    "/jobs",
    summary="Every tenant's jobs, newest first, with per-stage counts",
    response_model=None,
    responses={200: {"model": AdminJobList, "description": "The jobs."}},
)
async def admin_jobs(
    _: AdminDep,
    pool: PoolDep,
    status_filter: Annotated[JobFilter | None, Query(alias="status")] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    async with pool.acquire() as conn:
        rows = await store.admin_jobs(conn, status_filter, q, limit)
        counts = await store.read_counts_many(conn, [r["job_id"] for r in rows])
        spend = await costs.job_spend(conn, [r["job_id"] for r in rows])
    items = [with_spend(job_item(r, counts[r["job_id"]]), spend.get(r["job_id"])) for r in rows]
    return {"items": items, "limit": limit}


# --- totals -------------------------------------------------------------------------------


@router.get("/totals", summary="Jobs by status and recent throughput")
async def admin_totals(_: AdminDep, pool: PoolDep) -> dict[str, Any]:
    rows, window = await store.admin_totals(pool, WINDOW_MINUTES)
    by_status = dict.fromkeys(JobStatus, 0)
    by_status.update({r["status"]: r["jobs"] for r in rows})
    oldest = [r["oldest_active_at"] for r in rows if r["oldest_active_at"] is not None]
    return {
        "by_status": by_status,
        "total": sum(by_status.values()),
        "stalled": sum(r["stalled"] for r in rows),
        "oldest_active_at": _iso(min(oldest)) if oldest else None,
        "window_minutes": WINDOW_MINUTES,
        "last_window": {
            "submitted": window["submitted"],
            "completed": window["completed"],
            "failed": window["failed"],
            "pages": int(window["pages"]),
            "completed_per_minute": round(window["completed"] / WINDOW_MINUTES, 2),
        },
    }


# --- queues -------------------------------------------------------------------------------


@router.get("/queues", summary="Messages and consumers per queue")
async def admin_queues(_: AdminDep, ctx: CtxDep) -> dict[str, Any]:
    age = latest_queue_stats_age()
    return {
        "queues": latest_queue_stats(),
        "prefix": ctx.settings.bus_prefix,
        "age_seconds": None if age is None else round(age, 1),
    }


# --- the live stream ----------------------------------------------------------------------


class _FleetStream:
    """Sends every pushed update, with the job's tenant, filename and creation time."""

    def __init__(self, websocket: WebSocket, pool: asyncpg.Pool) -> None:
        self.ws = websocket
        self.pool = pool
        self.meta: dict[str, dict[str, Any]] = {}

    async def _lookup(self, job_ids: set[str]) -> None:
        missing = [uuid.UUID(j) for j in job_ids if j not in self.meta]
        if not missing:
            return
        if len(self.meta) + len(missing) > STREAM_META_CACHE:
            self.meta.clear()
        rows = await self.pool.fetch(
            "SELECT job_id, tenant, filename, created_at FROM jobs WHERE job_id = ANY($1)",
            missing,
        )
        for r in rows:
            self.meta[str(r["job_id"])] = {
                "tenant": r["tenant"],
                "filename": r["filename"],
                "created_at": _iso(r["created_at"]),
            }

    async def send_batch(self, updates: list[Snapshot]) -> None:
        await self._lookup({u["job_id"] for u in updates})
        for update in updates:
            await self.ws.send_text(json.dumps({**update, **self.meta.get(update["job_id"], {})}))

    async def pump(self, sub: Subscription) -> None:
        while True:
            update = await sub.get(STREAM_POLL_SECONDS)
            if sub.overflowed:
                await self.ws.close(WS_TRY_AGAIN_LATER, "Too slow: reconnect.")
                return
            if update is None:
                continue
            batch = [update]
            while len(batch) < STREAM_BATCH and not sub.queue.empty():
                batch.append(sub.queue.get_nowait())
            await self.send_batch(batch)


@router.websocket("/events")
async def admin_events(
    websocket: WebSocket,
    pool: PoolDep,
    hub: HubDep,
) -> None:
    principal = await accept_websocket(
        websocket,
        kind=SubjectKind.ADMIN_EVENTS,
        subject=ADMIN_EVENTS_SUBJECT,
        scope=Scope.ADMIN,
        every_tenant=True,
    )
    if principal is None:
        return
    with hub.subscribe_all() as sub:
        stream = _FleetStream(websocket, pool)
        error = await pump_until_disconnect(websocket, stream.pump(sub))
        if error is not None:
            log.warning("admin stream ended by an error", error=repr(error)[:500])
            # Tell the page to reconnect (and re-read the list) rather than leave it open.
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(WS_INTERNAL_ERROR, "Stream error: reconnect.")
