"""The dead-letter API (admin keys only): list, inspect, replay and purge dead letters.

GET    /v1/dead-letters?queue=&job_id=&reason=&limit=&cursor=
       -> {"items": [{id, message_id, queue, routing_key, reason, error, attempts, job_id,
                      created_at, replayed_at, replay_count}], "next_cursor": str | null}
       newest first; `queue` takes the queue name or its group ("ocr").
GET    /v1/dead-letters/{id}          -> the item plus payload and headers
POST   /v1/dead-letters/{id}/replay   -> the item plus job_revived; 404 unknown
POST   /v1/dead-letters/replay        {"ids": [...]} or {"queue", "job_id", "reason", "all"}
       -> {"replayed": [ids], "not_found": [ids], "failed": [{id, error}], "revived_jobs": [..]}
       A filter replays the dead letters not replayed yet (include_replayed=true for all).
DELETE /v1/dead-letters/{id}          -> 204; 404 unknown

A replay publishes the stored body to the queue the message died in (through the default
exchange, like a retry: only the group that gave up sees it again, not every group bound to
the event type) with the retry headers reset. When the job failed because of a dead letter,
the replay revives it (processing again, error and finished_at cleared) in the same
transaction that marks the dead letter replayed, committed before the publish so the
replayed work finds its job active.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from services.progress import store
from services.progress.arithmetic import Snapshot
from services.progress.dead_letter_recorder import H_REPLAY
from services.progress.deps import ctx_of, runtime_of
from services.progress.hub import Hub
from services.progress.lifecycle import JobWrite, save_one
from shared import audit, topology
from shared.api_docs import invalid_request, problem_response
from shared.auth import AdminDep
from shared.bus import H_ATTEMPT, H_ERROR, H_EVENT, H_QUEUE, H_REASON, Bus
from shared.events import JobStatus
from shared.service import ServiceContext
from shared.topology import Topology

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/dead-letters", tags=["dead-letters"])

# The bus's job.failed reason after it dead-letters a message ends with this: such a failure
# is undone by replaying the message.
DEAD_LETTER_FAILURE_MARK = "dead-letter queue"
# Headers of a failed delivery that a replay must not carry: it starts over at attempt 0.
RESET_HEADERS = frozenset({H_ATTEMPT, H_ERROR, H_REASON, H_QUEUE, "x-death"})
RESET_HEADER_PREFIXES = ("x-first-death-", "x-last-death-")
BULK_LIMIT = 1000

NOT_FOUND = "No such dead letter."

SUMMARY_COLUMNS = (
    "id, message_id, queue, routing_key, reason, error, attempts, job_id, created_at, "
    "replayed_at, replay_count"
)


def _ctx(request: Request) -> ServiceContext:
    return ctx_of(request.app)


def item_of(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "message_id": row["message_id"],
        "queue": row["queue"],
        "routing_key": row["routing_key"],
        "reason": row["reason"],
        "error": row["error"],
        "attempts": row["attempts"],
        "job_id": str(row["job_id"]) if row["job_id"] else None,
        "created_at": row["created_at"].isoformat(),
        "replayed_at": row["replayed_at"].isoformat() if row["replayed_at"] else None,
        "replay_count": row["replay_count"],
    }


def detail_of(row: asyncpg.Record) -> dict[str, Any]:
    payload = row["payload"]
    if payload is None:  # not JSON: show the bytes as text
        payload = bytes(row["body"]).decode("utf-8", "replace")
    return {**item_of(row), "payload": payload, "headers": row["headers"]}


def queue_filter(topo: Topology, queue: str | None) -> str | None:
    """A queue name, or a group name standing for its work queue."""
    if not queue:
        return None
    for group in topology.GROUPS:
        if queue == group.name:
            return topo.queue_name(group)
    return queue


def _decode_cursor(cursor: str | None) -> int | None:
    if not cursor:
        return None
    try:
        value = int(cursor)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "The cursor is not valid.") from None
    if value < 1:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "The cursor is not valid.")
    return value


_LIST = f"""
SELECT {SUMMARY_COLUMNS} FROM dead_letters
WHERE ($1::text IS NULL OR queue = $1)
  AND ($2::uuid IS NULL OR job_id = $2)
  AND ($3::text IS NULL OR reason = $3)
  AND ($4::bigint IS NULL OR id < $4)
ORDER BY id DESC
LIMIT $5
"""


async def list_dead_letters(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    queue: str | None,
    job_id: uuid.UUID | None,
    reason: str | None,
    limit: int,
    before_id: int | None,
) -> tuple[list[dict[str, Any]], str | None]:
    rows = await conn.fetch(_LIST, queue, job_id, reason, before_id, limit + 1)
    items = [item_of(r) for r in rows[:limit]]
    next_cursor = str(items[-1]["id"]) if len(rows) > limit else None
    return items, next_cursor


# --- replay -----------------------------------------------------------------------------


class ReplayRefused(Exception):
    """The message cannot be published (the broker refused or is unreachable)."""


def replay_headers(stored: dict[str, Any], routing_key: str, token: str) -> dict[str, Any]:
    headers = {
        k: v
        for k, v in (stored or {}).items()
        if k not in RESET_HEADERS and not k.startswith(RESET_HEADER_PREFIXES)
    }
    if routing_key:
        headers[H_EVENT] = routing_key
    headers[H_REPLAY] = token
    return headers


async def _revive_job(
    conn: asyncpg.Connection, job_id: uuid.UUID, now: datetime
) -> tuple[asyncpg.Record | None, Snapshot | None]:
    """Bring a job that failed because of a dead letter back to processing, inside the
    caller's transaction. Returns the job row as it was before (None when the job is not
    such a job) and the progress update to push."""
    rows = await store.lock_jobs(conn, [job_id])
    row = rows.get(job_id)
    if row is None or row["status"] != JobStatus.FAILED:
        return None, None
    if DEAD_LETTER_FAILURE_MARK not in (row["error"] or ""):
        return None, None  # failed for another reason (bad input, deadline): replay cannot help
    job = JobWrite.of(row)
    job.state.status = JobStatus.PROCESSING
    job.state.error = None
    job.state.finished_at = None
    job.state.stalled = False
    await store.set_revived(conn, job_id, now)
    await save_one(conn, job, await store.read_counts(conn, job_id), now=now, force=True)
    log.info("job revived by a dead-letter replay", job_id=str(job_id))
    return row, (job.outcome.updates[0] if job.outcome.updates else None)


async def replay_dead_letter(
    pool: asyncpg.Pool, bus: Bus, hub: Hub | None, dead_letter_id: int
) -> dict[str, Any] | None:
    """Replay one dead letter; None when it does not exist. Raises ReplayRefused when the
    publish fails (the dead letter and its job are then as they were)."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM dead_letters WHERE id = $1 FOR UPDATE", dead_letter_id
        )
        if row is None:
            return None
        job_before, update = None, None
        if row["job_id"] is not None:
            job_before, update = await _revive_job(conn, row["job_id"], now)
        marked = await conn.fetchrow(
            f"UPDATE dead_letters SET replayed_at = $2, replay_count = replay_count + 1 "
            f"WHERE id = $1 RETURNING {SUMMARY_COLUMNS}",
            dead_letter_id,
            now,
        )
    # Published after commit: the replayed work must find its job active.
    token = f"{dead_letter_id}.{marked['replay_count']}"
    try:
        await _publish_replay(bus, row, token)
    except Exception as exc:
        await _undo_replay(pool, row, job_before, now)
        log.warning("dead-letter replay could not be published", id=dead_letter_id, error=repr(exc))
        raise ReplayRefused(f"{type(exc).__name__}: {exc}") from exc
    if update and hub is not None and row["job_id"] is not None:
        hub.publish(row["job_id"], update)
    log.info(
        "dead letter replayed",
        id=dead_letter_id,
        queue=row["queue"],
        event_type=row["routing_key"],
        job_id=str(row["job_id"]) if row["job_id"] else None,
        revived=job_before is not None,
    )
    return {**item_of(marked), "job_revived": job_before is not None}


async def _publish_replay(bus: Bus, row: asyncpg.Record, token: str) -> None:
    topo = bus.topology
    headers = replay_headers(row["headers"], row["routing_key"], token)
    work_queues = {topo.queue_name(g) for g in topology.GROUPS}
    body = bytes(row["body"])
    if row["queue"] in work_queues:
        # Straight back into the queue it died in (default exchange), as a retry would.
        await bus.publish_to_queue(
            body, row["queue"], headers=headers, message_id=row["message_id"]
        )
    else:  # a queue docpipe does not know (renamed prefix?): route by event type
        await bus.publish_raw(
            body, row["routing_key"], headers=headers, message_id=row["message_id"]
        )


async def _undo_replay(
    pool: asyncpg.Pool,
    row: asyncpg.Record,
    job_before: asyncpg.Record | None,
    at: datetime,
) -> None:
    """The publish failed after commit: put the dead letter (and a revived job nothing has
    touched since) back as they were."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE dead_letters SET replayed_at = $2, replay_count = $3 WHERE id = $1",
            row["id"],
            row["replayed_at"],
            row["replay_count"],
        )
        if job_before is not None:
            await store.undo_revive(conn, job_before, at)


class BulkReplay(BaseModel):
    ids: list[int] | None = Field(default=None, max_length=BULK_LIMIT)
    queue: str | None = None
    job_id: uuid.UUID | None = None
    reason: str | None = None
    all: bool = False  # with no other filter: every dead letter not replayed yet
    include_replayed: bool = False
    limit: int = Field(default=BULK_LIMIT, ge=1, le=BULK_LIMIT)


async def _bulk_ids(pool: asyncpg.Pool, topo: Topology, body: BulkReplay) -> list[int]:
    rows = await pool.fetch(
        """
        SELECT id FROM dead_letters
        WHERE ($1::text IS NULL OR queue = $1)
          AND ($2::uuid IS NULL OR job_id = $2)
          AND ($3::text IS NULL OR reason = $3)
          AND ($4 OR replayed_at IS NULL)
        ORDER BY id
        LIMIT $5
        """,
        queue_filter(topo, body.queue),
        body.job_id,
        body.reason,
        body.include_replayed,
        body.limit,
    )
    return [r["id"] for r in rows]


# --- routes -------------------------------------------------------------------------------


@router.get(
    "",
    summary="List dead letters, newest first",
    responses={400: problem_response("The cursor is not valid.")},
)
async def get_dead_letters(
    request: Request,
    _admin: AdminDep,
    queue: Annotated[str | None, Query(max_length=255)] = None,
    job_id: uuid.UUID | None = None,
    reason: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    ctx = _ctx(request)
    items, next_cursor = await list_dead_letters(
        ctx.pool,
        queue=queue_filter(ctx.bus.topology, queue),
        job_id=job_id,
        reason=reason,
        limit=limit,
        before_id=_decode_cursor(cursor),
    )
    return {"items": items, "next_cursor": next_cursor}


@router.post("/replay", summary="Replay several dead letters: by ids, or by filter")
async def replay_many(request: Request, admin: AdminDep, body: BulkReplay) -> dict[str, Any]:
    ctx = _ctx(request)
    has_filter = body.queue or body.job_id or body.reason or body.all
    if body.ids is None and not has_filter:
        raise invalid_request(
            ("body",),
            "Name the dead letters: 'ids', or a filter ('queue', 'job_id', 'reason', or "
            "'all': true).",
        )
    ids = body.ids if body.ids is not None else await _bulk_ids(ctx.pool, ctx.bus.topology, body)
    replayed: list[int] = []
    not_found: list[int] = []
    failed: list[dict[str, Any]] = []
    revived: list[str] = []
    for dead_letter_id in dict.fromkeys(ids):  # once each, in the order given
        try:
            item = await replay_dead_letter(
                ctx.pool, ctx.bus, runtime_of(request.app).hub, dead_letter_id
            )
        except ReplayRefused as exc:
            failed.append({"id": dead_letter_id, "error": str(exc)})
            continue
        if item is None:
            not_found.append(dead_letter_id)
            continue
        replayed.append(dead_letter_id)
        if item["job_revived"]:
            revived.append(item["job_id"])
    await audit.record(
        ctx.pool,
        actor=admin.key_id,
        action=audit.Action.DEAD_LETTER_REPLAY,
        target="bulk" if body.ids is None else "ids",
        detail={
            "replayed": replayed,
            "failed": [f["id"] for f in failed],
            "filter": body.model_dump(mode="json", exclude={"ids"}, exclude_none=True),
        },
    )
    return {"replayed": replayed, "not_found": not_found, "failed": failed, "revived_jobs": revived}


@router.get("/{dead_letter_id}", summary="One dead letter, with its payload and headers")
async def get_dead_letter(request: Request, _admin: AdminDep, dead_letter_id: int) -> Any:
    row = await _ctx(request).pool.fetchrow(
        "SELECT * FROM dead_letters WHERE id = $1", dead_letter_id
    )
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return detail_of(row)


@router.post("/{dead_letter_id}/replay", summary="Publish a dead letter again")
async def replay_one(request: Request, admin: AdminDep, dead_letter_id: int) -> Any:
    ctx = _ctx(request)
    try:
        item = await replay_dead_letter(
            ctx.pool, ctx.bus, runtime_of(request.app).hub, dead_letter_id
        )
    except ReplayRefused as exc:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"The message could not be published: {exc}"
        ) from None
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    await audit.record(
        ctx.pool,
        actor=admin.key_id,
        action=audit.Action.DEAD_LETTER_REPLAY,
        target=str(dead_letter_id),
        detail={"job_id": item["job_id"], "queue": item["queue"]},
    )
    return item


@router.delete(
    "/{dead_letter_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Purge a dead letter"
)
async def purge_dead_letter(request: Request, admin: AdminDep, dead_letter_id: int) -> Response:
    async with _ctx(request).pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchrow(
            "DELETE FROM dead_letters WHERE id = $1 RETURNING id, queue, job_id", dead_letter_id
        )
        if deleted is not None:
            await audit.record(
                conn,
                actor=admin.key_id,
                action=audit.Action.DEAD_LETTER_PURGE,
                target=str(dead_letter_id),
                detail={"queue": deleted["queue"], "job_id": str(deleted["job_id"] or "")},
            )
    if deleted is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NOT_FOUND)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
