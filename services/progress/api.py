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

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable
from typing import Annotated

import asyncpg
import structlog
from fastapi import APIRouter, HTTPException, Query, WebSocket, status
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from services.progress import store
from services.progress.arithmetic import Snapshot
from services.progress.deps import HubDep, PoolDep
from services.progress.hub import Hub, Subscription
from services.progress.lifecycle import latest_snapshot
from services.progress.metrics import PUSH_LAG, WEBSOCKET_CLIENTS
from shared.auth import Principal, ReadDep, accept_websocket, may_see
from shared.snapshots import ProgressSnapshot
from shared.tickets import SubjectKind

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["progress"])

# Without a live push for this long, look in job_updates: covers updates applied by another
# progress replica, whose hub this process does not see.
POLL_SECONDS = 5.0

WS_BAD_REQUEST = 4400
WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_TRY_AGAIN_LATER = 1013
# seq is a bigint: a larger `after` could never be compared with it.
MAX_SEQ = 2**63 - 1


def parse_after(raw: str | None) -> int | None:
    """`?after=` as a seq, or ValueError with the sentence to close with."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("'after' must be a whole number.") from None
    if not 0 <= value <= MAX_SEQ:
        raise ValueError(f"'after' must be between 0 and {MAX_SEQ}.")
    return value


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


@router.get(
    "/{job_id}/progress",
    summary="Latest progress snapshot of a job",
    response_class=JSONResponse,
    responses={200: {"model": ProgressSnapshot, "description": "The latest snapshot."}},
)
async def job_progress(job_id: str, principal: ReadDep, pool: PoolDep) -> JSONResponse:
    # Answered as stored (what the WebSocket sent), not re-serialised through the model.
    jid = await visible_job(pool, principal, job_id)
    if jid is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    async with pool.acquire() as conn:
        snapshot = await latest_snapshot(conn, jid)
    if snapshot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    return JSONResponse(snapshot)


class _Stream:
    """Sends updates in seq order exactly once, filling any gap from job_updates."""

    def __init__(
        self, websocket: WebSocket, pool: asyncpg.Pool, job_id: uuid.UUID, hub: Hub | None = None
    ) -> None:
        self.ws = websocket
        self.pool = pool
        self.job_id = job_id
        self.hub = hub  # knows when each live update's event occurred (push-lag metric)
        self.last = -1
        self.done = False

    async def send(self, update: Snapshot) -> None:
        if self.done or update["seq"] <= self.last:
            return
        text = json.dumps(update) if self.hub is None else self.hub.encode(update)
        await self.ws.send_text(text)
        if self.hub is not None:
            lag = self.hub.push_lag(self.job_id, update["seq"])
            if lag is not None:
                PUSH_LAG.observe(lag)
        self.last = update["seq"]
        self.done = bool(update["final"])

    async def catch_up(self) -> None:
        for update in await store.updates_after(self.pool, self.job_id, max(self.last, 0)):
            await self.send(update)
            if self.done:
                return

    async def offer(self, update: Snapshot) -> None:
        """A live update: send it, or if earlier ones are missing, read them all in order."""
        if update["seq"] <= self.last:
            return
        if update["seq"] == self.last + 1:
            await self.send(update)
        else:
            await self.catch_up()

    async def pump(self, sub: Subscription) -> None:
        while not self.done:
            update = await sub.get(POLL_SECONDS)
            if sub.overflowed:
                await self.ws.close(WS_TRY_AGAIN_LATER, "Too slow: reconnect with ?after=<seq>.")
                return
            if update is None:
                await self.catch_up()
            else:
                await self.offer(update)


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


async def pump_until_disconnect(
    websocket: WebSocket, pump: Awaitable[None]
) -> BaseException | None:
    """Run `pump` until it ends or the client goes away; returns the error that ended it, if
    it was more than the client disconnecting."""
    tasks = {asyncio.ensure_future(pump), asyncio.ensure_future(_until_disconnect(websocket))}
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception) and not isinstance(
            result, WebSocketDisconnect | RuntimeError
        ):
            return result
    return None


@router.websocket("/{job_id}/events")
async def job_events(
    websocket: WebSocket,
    job_id: str,
    pool: PoolDep,
    hub: HubDep,
    after: Annotated[str | None, Query(description="Replay updates after this seq.")] = None,
) -> None:
    principal = await accept_websocket(websocket, kind=SubjectKind.JOB, subject=job_id)
    if principal is None:
        return
    try:
        after_seq = parse_after(after)
    except ValueError as exc:
        await websocket.close(WS_BAD_REQUEST, str(exc))
        return
    jid = await visible_job(pool, principal, job_id)
    if jid is None:
        await websocket.close(WS_NOT_FOUND, "No such job.")
        return
    # Subscribe before reading the backlog, so nothing committed in between is missed.
    with WEBSOCKET_CLIENTS.track_inprogress(), hub.subscribe(jid) as sub:
        stream = _Stream(websocket, pool, jid, hub)
        await _start(stream, after_seq)
        if not stream.done:
            error = await pump_until_disconnect(websocket, stream.pump(sub))
            if error is not None:
                log.warning("progress stream ended by an error", error=repr(error)[:500])
        if stream.done:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(1000)


async def _start(stream: _Stream, after: int | None) -> None:
    """The first frames: the latest snapshot, or every update after `after`."""
    async with stream.pool.acquire() as conn:
        latest = await latest_snapshot(conn, stream.job_id)
    if after is None:
        if latest is not None:
            await stream.send(latest)
        return
    stream.last = after
    await stream.catch_up()
    if latest is not None and latest["final"] and latest["seq"] <= stream.last:
        stream.done = True  # the client has already seen the end
