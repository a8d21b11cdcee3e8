"""Progress over HTTP and WebSocket.

WS  /v1/jobs/{job_id}/events[?token=<key>][&after=<seq>]
    JSON text frames, one snapshot each, seq strictly increasing, until the final one
    (status completed/failed/cancelled), then a normal close. Without `after` the first
    frame is the latest snapshot (seq 0 if none was recorded yet); with `after` every
    recorded update with a greater seq is replayed first. Close codes: 4401 no valid key,
    4404 unknown job or another tenant's, 1013 the client fell behind (reconnect with
    ?after=<last seq seen>).
GET /v1/jobs/{job_id}/progress -> the latest snapshot; 404 unknown/other tenant's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket, status
from starlette.websockets import WebSocketDisconnect

from services.progress.aggregate import latest_snapshot, updates_after
from services.progress.hub import Hub, Subscription
from services.progress.metrics import PUSH_LAG, WEBSOCKET_CLIENTS
from shared.auth import Principal, PrincipalDep, websocket_principal

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["progress"])

# Without a live push for this long, look in job_updates: covers updates applied by another
# progress replica, whose hub this process does not see.
POLL_SECONDS = 5.0

WS_UNAUTHORIZED = 4401
WS_NOT_FOUND = 4404
WS_TRY_AGAIN_LATER = 1013


def _pool(app: Any) -> asyncpg.Pool:
    return app.state.ctx.pool


def _hub(app: Any) -> Hub:
    return app.state.ctx.state["hub"]


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
    tenant = await pool.fetchval("SELECT tenant FROM jobs WHERE job_id = $1", jid)
    if tenant is None or not (principal.admin or principal.tenant == tenant):
        return None
    return jid


@router.get("/{job_id}/progress", summary="Latest progress snapshot of a job")
async def job_progress(job_id: str, principal: PrincipalDep, request: Request) -> dict[str, Any]:
    pool = _pool(request.app)
    jid = await visible_job(pool, principal, job_id)
    if jid is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    async with pool.acquire() as conn:
        snapshot = await latest_snapshot(conn, jid)
    if snapshot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such job.")
    return snapshot


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

    async def send(self, update: dict[str, Any]) -> None:
        if self.done or update["seq"] <= self.last:
            return
        text = json.dumps(update) if self.hub is None else self.hub.encode(update)
        await self.ws.send_text(text)
        if self.hub is not None:
            lag = self.hub.push_lag(self.job_id, update["seq"])
            if lag is not None:
                PUSH_LAG.observe(lag)
        self.last = update["seq"]
        self.done = bool(update.get("final"))

    async def catch_up(self) -> None:
        for update in await updates_after(self.pool, self.job_id, max(self.last, 0)):
            await self.send(update)
            if self.done:
                return

    async def offer(self, update: dict[str, Any]) -> None:
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
    principal: Annotated[Principal | None, Depends(websocket_principal)],
    after: Annotated[int | None, Query(ge=0)] = None,
) -> None:
    # Accept first: a close before accepting would surface as HTTP 403, not our close code.
    await websocket.accept()
    if principal is None:
        await websocket.close(WS_UNAUTHORIZED, "A valid API key is required.")
        return
    pool = _pool(websocket.app)
    jid = await visible_job(pool, principal, job_id)
    if jid is None:
        await websocket.close(WS_NOT_FOUND, "No such job.")
        return

    # Subscribe before reading the backlog, so nothing committed in between is missed.
    hub = _hub(websocket.app)
    with WEBSOCKET_CLIENTS.track_inprogress(), hub.subscribe(jid) as sub:
        stream = _Stream(websocket, pool, jid, hub)
        async with pool.acquire() as conn:
            latest = await latest_snapshot(conn, jid)
        if after is None:
            if latest is not None:
                await stream.send(latest)
        else:
            stream.last = after
            await stream.catch_up()
            if latest is not None and latest.get("final") and latest["seq"] <= stream.last:
                stream.done = True  # the client has already seen the end
        if not stream.done:
            error = await pump_until_disconnect(websocket, stream.pump(sub))
            if error is not None:
                log.warning("progress stream ended by an error", error=repr(error)[:500])
        if stream.done:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect):
                await websocket.close(1000)
