"""A batch's progress over HTTP and WebSocket (the batch rows and their jobs are ingest's
POST /v1/batches; the aggregate is kept by progress, see batches.py).

GET /v1/batches/{batch_id} -> shared.events.BatchSnapshot; 404 unknown/another tenant's batch.
WS  /v1/batches/{batch_id}/events[?token=<key>][&after=<seq>]
    The same rules as WS /v1/jobs/{id}/events: JSON text frames, `seq` strictly increasing
    over the batch's messages, until the final aggregate (`final: true`, the batch ended),
    then a normal close. Two kinds of message: `{"type": "batch", ...}` the aggregate
    (shared.events.BatchSnapshot) and `{"type": "job", "batch_id", "seq", "job": <job
    snapshot>}` one job's change (shared.events.BatchJobMessage). Without `after` the first
    frame is the aggregate as it is now (at the batch's current seq; 0 before any job moved);
    with `after` every recorded message with a greater seq is replayed first. Close codes:
    4400 `after` is not a whole number from 0 to 2**63-1, 4401 no valid key, 4404 unknown
    batch or another tenant's, 1013 the client fell behind (reconnect with ?after=<last seq>).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import asyncpg
from fastapi import APIRouter, HTTPException, Query, WebSocket, status
from fastapi.responses import JSONResponse

from services.progress.batches import (
    Aggregate,
    BatchMessage,
    StreamMessage,
    batch_eta,
    batch_message,
    next_aggregate,
)
from services.progress.deps import BatchHubDep, PoolDep
from services.progress.lifecycle import utcnow
from services.progress.seq_stream import SeqStream, open_subject, serve
from services.progress.store import batches as batch_store
from shared.auth import Principal, ReadDep, may_see
from shared.snapshots import BatchSnapshot
from shared.tickets import SubjectKind

router = APIRouter(prefix="/v1/batches", tags=["batches"])

NO_SUCH_BATCH = "No such batch."


async def visible_batch(
    pool: asyncpg.Pool, principal: Principal, batch_id: str
) -> uuid.UUID | None:
    """The batch's id if it exists and the principal may see it (admins see every tenant)."""
    try:
        bid = uuid.UUID(batch_id)
    except ValueError:
        return None
    tenant = await batch_store.batch_tenant(pool, bid)
    if tenant is None or not may_see(principal, tenant):
        return None
    return bid


async def current_snapshot(conn: asyncpg.Connection, batch_id: uuid.UUID) -> BatchMessage | None:
    """The aggregate as it is now, at the batch's current seq. Before progress has seen any of
    its jobs (seq 0) it is summed from the job rows; the ETA is the model's as of now.

    The batch row and its jobs are read in one snapshot of the database (a window commits
    both together), so a seq-0 aggregate never shows jobs that a later seq reports."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        row = await batch_store.read_batch(conn, batch_id)
        if row is None:
            return None
        aggregate = Aggregate.of(row)
        if aggregate.final:
            return batch_message(batch_id, row["seq"], aggregate, row["updated_at"])
        sums = (await batch_store.sum_jobs(conn, [batch_id]))[batch_id]
    now = utcnow()
    if row["seq"] == 0:
        aggregate = next_aggregate(
            aggregate,
            sums,
            cancel_requested=row["cancel_requested_at"] is not None,
            created_at=row["created_at"],
            now=now,
        )
    message = batch_message(batch_id, row["seq"], aggregate, row["updated_at"])
    if not aggregate.final:
        message["eta_seconds"] = batch_eta(sums, row["created_at"], now)
    return message


@router.get(
    "/{batch_id}",
    summary="A batch's aggregate progress",
    response_class=JSONResponse,
    responses={
        200: {"model": BatchSnapshot, "description": "The batch's aggregate."},
        404: {"description": "No such batch, or another tenant's."},
    },
)
async def batch_progress(batch_id: str, principal: ReadDep, pool: PoolDep) -> JSONResponse:
    bid = await visible_batch(pool, principal, batch_id)
    snapshot = None
    if bid is not None:
        async with pool.acquire() as conn:
            snapshot = await current_snapshot(conn, bid)
    if snapshot is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=NO_SUCH_BATCH)
    return JSONResponse(snapshot)


class _BatchStream(SeqStream[StreamMessage]):
    """The batch's messages, the gaps filled from batch_updates."""

    def __init__(self, websocket: WebSocket, pool: asyncpg.Pool, batch_id: uuid.UUID) -> None:
        super().__init__(websocket)
        self.pool = pool
        self.batch_id = batch_id

    def is_final(self, message: StreamMessage) -> bool:
        return message["type"] == "batch" and bool(message.get("final"))

    async def backlog(self, after: int) -> list[StreamMessage]:
        return await batch_store.batch_updates_after(self.pool, self.batch_id, after)

    async def latest(self) -> StreamMessage | None:
        async with self.pool.acquire() as conn:
            return await current_snapshot(conn, self.batch_id)


@router.websocket("/{batch_id}/events")
async def batch_events(
    websocket: WebSocket,
    batch_id: str,
    pool: PoolDep,
    hub: BatchHubDep,
    after: Annotated[str | None, Query(description="Replay messages after this seq.")] = None,
) -> None:
    # Checks the header key or the ?ticket= for this batch, and the read scope.
    opened = await open_subject(
        websocket,
        after,
        kind=SubjectKind.BATCH,
        subject=batch_id,
        visible=lambda principal: visible_batch(pool, principal, batch_id),
        not_found=NO_SUCH_BATCH,
    )
    if opened is None:
        return
    bid, after_seq = opened
    # Subscribe before reading the backlog, so nothing committed in between is missed.
    with hub.subscribe(bid) as sub:
        await serve(websocket, _BatchStream(websocket, pool, bid), sub, after_seq, name="batch")
