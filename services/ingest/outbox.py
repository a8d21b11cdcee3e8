"""Transactional outbox: an event is written in the same transaction as the row it describes
and published after commit. The request publishes at once (fast path); the relay loop
publishes whatever is left, so a crash between commit and publish only delays the event.

Every publisher claims rows with FOR UPDATE SKIP LOCKED and marks them published before its
transaction commits, so any number of relays (and fast paths) publish each row once; a crash
after the broker's confirm but before the commit republishes it with the same message_id,
which consumers recognise as a duplicate.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from shared.bus import Bus
from shared.events import Event

log = structlog.get_logger(__name__)

RELAY_INTERVAL_SECONDS = 0.5
RELAY_BATCH = 100
PUBLISH_TIMEOUT_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 10.0

_COLUMNS = "id, message_id, routing_key, payload, headers, priority"


def payload_bytes(payload: dict[str, Any]) -> bytes:
    """The message body for a stored payload (jsonb keeps the JSON value, not its spelling)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def enqueue(
    conn: asyncpg.Connection,
    event: Event,
    *,
    priority: int = 0,
    headers: dict[str, Any] | None = None,
) -> int | None:
    """Add the event to the outbox inside the caller's transaction; returns the row id, or
    None when an event with the same message_id is already there."""
    outbox_id: int | None = await conn.fetchval(
        """
        INSERT INTO outbox (message_id, routing_key, payload, headers, priority)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (message_id) DO NOTHING
        RETURNING id
        """,
        event.message_id(),
        event.routing_key,
        event.model_dump(mode="json"),
        headers or {},
        priority,
    )
    return outbox_id


async def _publish_row(bus: Bus, row: asyncpg.Record) -> None:
    await asyncio.wait_for(
        bus.publish_raw(
            payload_bytes(row["payload"]),
            row["routing_key"],
            headers=dict(row["headers"] or {}),
            message_id=row["message_id"],
            priority=row["priority"],
        ),
        PUBLISH_TIMEOUT_SECONDS,
    )


async def _mark_published(conn: asyncpg.Connection, ids: list[int]) -> None:
    # A document password has no business staying in the database once it is on its way,
    # not even sealed (a key that leaks later would open it).
    await conn.execute(
        "UPDATE outbox SET published_at = now(), payload = payload - 'password_token' "
        "WHERE id = ANY($1::bigint[])",
        ids,
    )


FAST_PATH_FAILED = "fast-path publish failed; the outbox relay will retry"

# The rows the relay may publish: its own bus's, and those no bus claims (migration 018).
_THIS_BUS = "(bus_prefix IS NULL OR bus_prefix = current_setting('docpipe.bus_prefix', true))"
# ...and not held by admission control (services/ingest/admission.py, migration 020).
_NOT_HELD = "NOT EXISTS (SELECT 1 FROM held_uploads h WHERE h.outbox_id = outbox.id)"


async def publish_now(pool: asyncpg.Pool, bus: Bus, outbox_id: int) -> bool:
    """Fast path right after commit. False if it could not (the relay will) or another
    publisher already has the row."""
    return await publish_many(pool, bus, [outbox_id]) == 1


async def publish_many(pool: asyncpg.Pool, bus: Bus, outbox_ids: list[int]) -> int:
    """publish_now for many rows (a batch's): up to RELAY_BATCH rows per transaction, their
    publishes awaited together. Returns how many it published; a failure leaves the rest to
    the relay. Held rows are skipped (admission releases them later), and so are another
    bus's (a release pass may release them: that bus's relay publishes them)."""
    published = 0
    for start in range(0, len(outbox_ids), RELAY_BATCH):
        ids = outbox_ids[start : start + RELAY_BATCH]
        try:
            async with pool.acquire() as conn, conn.transaction():
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM outbox WHERE id = ANY($1::bigint[]) "
                    f"AND published_at IS NULL AND {_THIS_BUS} AND {_NOT_HELD} "
                    "ORDER BY id FOR UPDATE SKIP LOCKED",
                    ids,
                )
                results = await asyncio.gather(
                    *(_publish_row(bus, row) for row in rows), return_exceptions=True
                )
                done = [row["id"] for row, r in zip(rows, results, strict=True) if r is None]
                if done:
                    await _mark_published(conn, done)
            published += len(done)
            if len(done) < len(rows):
                error = next(r for r in results if r is not None)
                log.warning(FAST_PATH_FAILED, error=repr(error))
                break
        except Exception as exc:  # the relay retries; the client's request still succeeds
            log.warning(FAST_PATH_FAILED, error=repr(exc))
            break
    return published


async def relay_once(pool: asyncpg.Pool, bus: Bus, *, batch: int = RELAY_BATCH) -> int:
    """Publish up to `batch` unpublished rows; returns how many were published.

    Rows published before a failure are still marked (and committed); the failure is raised.
    """
    error: Exception | None = None
    published: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM outbox WHERE published_at IS NULL AND {_THIS_BUS} "
            f"AND {_NOT_HELD} ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
            batch,
        )
        for row in rows:
            try:
                await _publish_row(bus, row)
            except Exception as exc:
                error = exc
                break
            published.append(row["id"])
        if published:
            await _mark_published(conn, published)
    if published:
        log.info("outbox relay published", count=len(published))
    if error is not None:
        raise error
    return len(published)


async def run_relay(
    pool: asyncpg.Pool,
    bus: Bus,
    *,
    interval: float = RELAY_INTERVAL_SECONDS,
    batch: int = RELAY_BATCH,
) -> None:
    """Poll the outbox for the life of the service, backing off while publishing fails."""
    while True:
        await asyncio.sleep(interval)
        # A failing pass is tried again after interval * 2, 4, 8... (at most MAX_BACKOFF), so
        # an unreachable broker is not hammered; the first pass that works resets the delay.
        await AsyncRetrying(
            wait=wait_exponential(multiplier=2 * interval, max=MAX_BACKOFF_SECONDS),
            retry=retry_if_exception_type(Exception),
            before_sleep=_log_failed_pass,
        )(_drain, pool, bus, batch)


async def _drain(pool: asyncpg.Pool, bus: Bus, batch: int) -> None:
    """Publish until a pass finds less than a full batch (a backlog drains without waits)."""
    while await relay_once(pool, bus, batch=batch) == batch:
        pass


def _log_failed_pass(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning("outbox relay pass failed", error=repr(error), failures=state.attempt_number)
