"""The audit trail: what admins did, who did it (a key id, never a key), when and to what.

Every entry goes to the append-only audit_log table (migration 014: a trigger refuses UPDATE,
DELETE and TRUNCATE) and to the log as an "audit" line. Record an entry in the transaction of
the change it describes where there is one, so neither exists without the other.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("docpipe.audit")

# Detail values longer than this are cut: the detail says what was done, not the payload.
DETAIL_MAX_CHARS = 500
LIST_MAX = 500


class Action(StrEnum):
    DEAD_LETTER_REPLAY = "dead_letter.replay"
    DEAD_LETTER_PURGE = "dead_letter.purge"
    JOB_CANCEL_AS_ADMIN = "job.cancel_as_admin"
    BATCH_CANCEL_AS_ADMIN = "batch.cancel_as_admin"
    # Erasure (DELETE /v1/jobs/{id}, /v1/batches/{id}) is recorded whoever asks: the job and
    # its rows are gone afterwards, and this is what is left to say it happened.
    JOB_DELETE = "job.delete"
    BATCH_DELETE = "batch.delete"
    KEY_ADD = "key.add"
    KEY_REVOKE = "key.revoke"
    KEY_ROTATE = "key.rotate"


def _bounded(detail: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in (detail or {}).items():
        if isinstance(value, str) and len(value) > DETAIL_MAX_CHARS:
            value = value[:DETAIL_MAX_CHARS] + "…"
        out[name] = value
    return out


async def record(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    actor: str,
    action: Action,
    target: str,
    tenant: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    bounded = _bounded(detail)
    await conn.execute(
        "INSERT INTO audit_log (actor, tenant, action, target, detail)"
        " VALUES ($1, $2, $3, $4, $5::text::jsonb)",
        actor,
        tenant,
        action.value,
        target,
        json.dumps(bounded, default=str),
    )
    log.info(
        "audit",
        actor=actor,
        action=action.value,
        target=target,
        audit_tenant=tenant,
        detail=bounded,
    )


async def record_job_action(
    pool: asyncpg.Pool, actor: str, action: Action, job_id: uuid.UUID, requested: bool
) -> None:
    """An admin's action on a job, under the job's tenant."""
    tenant = await pool.fetchval("SELECT tenant FROM jobs WHERE job_id = $1", job_id)
    await record(
        pool,
        actor=actor,
        action=action,
        target=str(job_id),
        tenant=tenant,
        detail={"requested": requested},
    )


async def entries(
    conn: asyncpg.Pool | asyncpg.Connection,
    *,
    tenant: str | None,
    all_tenants: bool,
    limit: int = 100,
    before_id: int | None = None,
    action: str | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `all_tenants` false: only the entries about `tenant`."""
    rows = await conn.fetch(
        "SELECT id, at, actor, tenant, action, target, detail FROM audit_log"
        " WHERE ($1 OR tenant = $2) AND ($3::bigint IS NULL OR id < $3)"
        " AND ($4::text IS NULL OR action = $4)"
        " ORDER BY id DESC LIMIT $5",
        all_tenants,
        tenant,
        before_id,
        action,
        min(max(limit, 1), LIST_MAX),
    )
    return [
        {
            "id": r["id"],
            "at": r["at"].isoformat(),
            "actor": r["actor"],
            "tenant": r["tenant"],
            "action": r["action"],
            "target": r["target"],
            "detail": r["detail"],
        }
        for r in rows
    ]
