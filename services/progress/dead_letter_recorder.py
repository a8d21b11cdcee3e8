"""Record every dead letter in PostgreSQL: a raw consumer of each <prefix>.<group>.dlq queue.

A raw subscription (Bus.subscribe_dead_letters): a dead letter is not an event to apply, and
retrying or dead-lettering a dead letter would loop. The row is inserted first and the message acked
after, so a crash in between re-records it, which the unique key turns into a no-op. While
the database is unreachable, messages go back to the queue (after a pause), never lost.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog
from prometheus_client import Counter

from shared import topology
from shared.bus import H_ATTEMPT, H_ERROR, H_EVENT, H_QUEUE, H_REASON, InboundMessage, RawHandler
from shared.service import ServiceContext

log = structlog.get_logger(__name__)

# Stamped on a replayed message ("<dead letter id>.<replay number>"); the bus copies headers
# through retries into the next dead-lettering, which tells a new death from a re-recording.
H_REPLAY = "x-docpipe-replay"

# A document.uploaded's sealed password, and the clear one an outdated publisher may still
# send: dropped from every stored dead letter.
PASSWORD_FIELDS = frozenset({"password_token", "password"})

# Pause before handing a message back when it could not be recorded (database down), so a
# broken database does not turn into a hot redelivery loop.
REQUEUE_PAUSE_SECONDS = 2.0
RECORDER_PREFETCH = 16

DEAD_LETTERS_RECORDED = Counter(
    "docpipe_dead_letters_recorded_total",
    "Dead letters recorded from the dead-letter queues, by work queue and reason",
    ["queue", "reason"],
)


@dataclass(frozen=True)
class DeadLetter:
    """What one dead-lettered message becomes in the dead_letters table."""

    message_id: str | None
    dedupe_key: str
    replay_token: str
    queue: str
    routing_key: str
    reason: str
    error: str | None
    attempts: int
    job_id: uuid.UUID | None
    payload: Any  # the JSON body, or None when the body is not JSON
    body: bytes
    headers: dict[str, Any]


def storable(text: str) -> str:
    """Text PostgreSQL accepts: no NULs, no lone surrogates (a JSON body may escape both)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def jsonable(value: Any) -> Any:
    """AMQP header values (bytes, datetimes, decimals, nested tables) and JSON bodies as
    values jsonb can hold."""
    if isinstance(value, str):
        return storable(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        try:
            return storable(bytes(value).decode("utf-8"))
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(bytes(value)).decode()
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {storable(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return storable(str(value))


def _parse_uuid(value: Any) -> uuid.UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _first_death(headers: dict[str, Any]) -> dict[str, Any]:
    """RabbitMQ's own x-death entry, present when the broker dead-lettered the message
    (rejected, expired, over a length limit) rather than the bus."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list | tuple) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def describe_dead_letter(
    body: bytes,
    headers: dict[str, Any] | None,
    *,
    message_id: str | None,
    default_queue: str,
) -> DeadLetter:
    """Everything worth keeping about a dead message, read leniently: a malformed message is
    exactly the kind that ends up here."""
    headers = dict(headers or {})
    death = _first_death(headers)
    death_keys = death.get("routing-keys") or []
    routing_key = _text(headers.get(H_EVENT)) or (_text(death_keys[0]) if death_keys else "")
    queue = _text(headers.get(H_QUEUE)) or _text(death.get("queue")) or default_queue
    reason = _text(headers.get(H_REASON)) or _text(death.get("reason")) or "unknown"
    routing_key, queue, reason = storable(routing_key), storable(queue), storable(reason)
    error = _text(headers.get(H_ERROR)) or None
    attempts = _int(headers.get(H_ATTEMPT)) if H_ATTEMPT in headers else _int(death.get("count"))

    payload: Any = None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    job_id = _parse_uuid(payload.get("job_id")) if isinstance(payload, dict) else None
    if isinstance(payload, dict) and not PASSWORD_FIELDS.isdisjoint(payload):
        # A document password never rests in the database, sealed or (sent by a publisher
        # that missed the contract) in clear, whatever the routing key claims; a replay goes
        # without it (an encrypted PDF then fails with a reason saying a password is needed).
        payload = {k: v for k, v in payload.items() if k not in PASSWORD_FIELDS}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if payload is not None:
        payload = jsonable(payload)

    dedupe_key = message_id or "sha256:" + hashlib.sha256(body).hexdigest()
    return DeadLetter(
        message_id=storable(message_id) if message_id else None,
        dedupe_key=storable(dedupe_key),
        replay_token=storable(_text(headers.get(H_REPLAY))),
        queue=queue,
        routing_key=routing_key,
        reason=reason,
        error=storable(error) if error else None,
        attempts=attempts,
        job_id=job_id,
        payload=payload,
        body=body,
        headers=jsonable(headers),
    )


_INSERT = """
INSERT INTO dead_letters (message_id, dedupe_key, replay_token, queue, routing_key, reason,
                          error, attempts, job_id, payload, body, headers)
SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::int,
       $9::uuid, $10::jsonb, $11::bytea, $12::jsonb
-- Nothing of a deleted job is kept (shared.purge), not even a message of it that died.
WHERE $9::uuid IS NULL OR NOT EXISTS (SELECT 1 FROM deleted_jobs WHERE job_id = $9::uuid)
ON CONFLICT (queue, dedupe_key, replay_token) DO NOTHING
RETURNING id
"""


async def record_dead_letter(
    conn: asyncpg.Connection | asyncpg.Pool, letter: DeadLetter
) -> int | None:
    """Insert the dead letter; returns its id, or None when it was recorded before."""
    dead_letter_id: int | None = await conn.fetchval(
        _INSERT,
        letter.message_id,
        letter.dedupe_key,
        letter.replay_token,
        letter.queue,
        letter.routing_key,
        letter.reason,
        letter.error,
        letter.attempts,
        letter.job_id,
        letter.payload,
        letter.body,
        letter.headers,
    )
    return dead_letter_id


def subscribe_dead_letter_queues(ctx: ServiceContext) -> None:
    """Consume every group's dead-letter queue (declared by the bus topology)."""
    for group in topology.GROUPS:
        ctx.bus.subscribe_dead_letters(
            group,
            make_recorder(ctx.pool, ctx.bus.topology.queue_name(group)),
            prefetch=RECORDER_PREFETCH,
            requeue_pause_seconds=REQUEUE_PAUSE_SECONDS,
        )


def make_recorder(pool: asyncpg.Pool, default_queue: str) -> RawHandler:
    """Records each dead letter of one queue. Raising (database down) puts the message back
    on the queue after a pause (the bus's dead-letter policy)."""

    async def record(message: InboundMessage) -> None:
        letter = describe_dead_letter(
            message.body, dict(message.headers), message_id=message.message_id,
            default_queue=default_queue,
        )  # fmt: skip
        new_id = await record_dead_letter(pool, letter)
        if new_id is None:
            log.info(
                "dead letter already recorded", queue=letter.queue, message_id=message.message_id
            )
            return
        DEAD_LETTERS_RECORDED.labels(queue=letter.queue, reason=letter.reason).inc()
        log.warning(
            "dead letter recorded",
            dead_letter_id=new_id,
            queue=letter.queue,
            event_type=letter.routing_key,
            reason=letter.reason,
            job_id=str(letter.job_id) if letter.job_id else None,
            message_id=letter.message_id,
        )

    return record
