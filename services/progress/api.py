"""Progress over HTTP and WebSocket.

WS  /v1/jobs/{job_id}/events[?ticket=<ticket>][&after=<seq>]
    JSON text frames, one snapshot each, seq strictly increasing, until the final one
    (status completed/failed/cancelled), then a normal close. Each frame is a
    shared.snapshots.ProgressSnapshot. Without `after` the first frame is the latest snapshot
    (seq 0 if none was recorded yet); with `after` every recorded update with a greater seq
    is replayed first. Authenticated by the Authorization header, or by a ticket from
    POST /v1/jobs/{job_id}/ws-ticket (services/progress/tickets.py); ?token=<key> only in dev.
    Close codes: 4400 `after` is not a whole number from 0 to 2**63-1, 4401 no valid key or
    ticket, 4403 a key without the read scope, 4404 unknown job or another tenant's, 1013 the
    client fell behind (reconnect with ?after=<last seq seen>).
GET /v1/jobs/{job_id}/progress -> the latest snapshot; 404 unknown/other tenant's job.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, HTTPException, Query, WebSocket, status
from fastapi.responses import JSONResponse

from services.progress import store
from services.progress.arithmetic import Snapshot
from services.progress.deps import HubDep, PoolDep
from services.progress.hub import Hub
from services.progress.lifecycle import latest_snapshot
from services.progress.metrics import PUSH_LAG, WEBSOCKET_CLIENTS
from services.progress.seq_stream import SeqStream, open_subject, serve
from shared.auth import Principal, ReadDep, may_see
from shared.snapshots import ProgressSnapshot
from shared.tickets import SubjectKind

router = APIRouter(prefix="/v1/jobs", tags=["progress"])


def _parse_id(job_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


async def visible_job(pool: asyncpg.Pool, principal: Principal, job_id: str) -> uuid.UUID | None:
    """The job's id if it exists and the principal may see it (admins see every tenant)."""
    jid = _parse_id(job_id)
    if jid is None:
        return None
    tenant = await store.job_tenant(pool, jid)
    if tenant is None or not may_see(principal, tenant):
        return None
    return jid


async def visible_job_or_404(pool: asyncpg.Pool, principal: Principal, job_id: str) -> uuid.UUID:
    """visible_job, or HTTP 404 for a job that does not exist or is not the principal's."""
    jid = await visible_job(pool, principal, job_id)
    if jid is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    return jid


@router.get(
    "/{job_id}/progress",
    summary="Latest progress snapshot of a job",
    response_class=JSONResponse,
    responses={200: {"model": ProgressSnapshot, "description": "The latest snapshot."}},
)
async def job_progress(job_id: str, principal: ReadDep, pool: PoolDep) -> JSONResponse:
    # Answered as stored (what the WebSocket sent), not re-serialised through the model.
    jid = await visible_job_or_404(pool, principal, job_id)
    async with pool.acquire() as conn:
        snapshot = await latest_snapshot(conn, jid)
    if snapshot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    return JSONResponse(snapshot)


class _Stream(SeqStream[Snapshot]):
    """A job's updates, the gaps filled from job_updates."""

    def __init__(
        self, websocket: WebSocket, pool: asyncpg.Pool, job_id: uuid.UUID, hub: Hub | None = None
    ) -> None:
        super().__init__(websocket)
        self.pool = pool
        self.job_id = job_id
        self.hub = hub  # knows when each live update's event occurred (push-lag metric)

    def encode(self, message: Snapshot) -> str:
        return super().encode(message) if self.hub is None else self.hub.encode(message)

    def sent(self, message: Snapshot) -> None:
        if self.hub is not None:
            lag = self.hub.push_lag(self.job_id, message["seq"])
            if lag is not None:
                PUSH_LAG.observe(lag)

    async def backlog(self, after: int) -> list[Snapshot]:
        return await store.updates_after(self.pool, self.job_id, after)

    async def latest(self) -> Snapshot | None:
        async with self.pool.acquire() as conn:
            return await latest_snapshot(conn, self.job_id)


@router.websocket("/{job_id}/events")
async def job_events(
    websocket: WebSocket,
    job_id: str,
    pool: PoolDep,
    hub: HubDep,
    after: Annotated[str | None, Query(description="Replay updates after this seq.")] = None,
) -> None:
    opened = await open_subject(
        websocket,
        after,
        kind=SubjectKind.JOB,
        subject=job_id,
        visible=lambda principal: visible_job(pool, principal, job_id),
        not_found="No such job.",
    )
    if opened is None:
        return
    jid, after_seq = opened
    # Subscribe before reading the backlog, so nothing committed in between is missed.
    with WEBSOCKET_CLIENTS.track_inprogress(), hub.subscribe(jid) as sub:
        await serve(websocket, _Stream(websocket, pool, jid, hub), sub, after_seq, name="progress")
