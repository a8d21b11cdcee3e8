"""The audit trail against the real services: dead-letter replays and purges, an admin's
cancel and key changes are recorded with who (a key id), what, when and on what; the table
refuses every change; GET /v1/admin/audit lists it for admins, each within its tenants."""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import httpx
import pytest

from shared import keys as key_store
from shared.keys import ALL_SCOPES, Scope, fingerprint
from shared.settings import Settings
from tests.integration.stack_client import StackClient
from tests.integration.test_reliability_dead_letters import (
    admin,
    publish_raw,
    wait_for_dead_letters,
)

pytestmark = pytest.mark.integration


async def _audit(stack: StackClient, key: str, **params: Any) -> httpx.Response:
    return await admin(stack, "GET", "/v1/admin/audit", key=key, params=params)


async def _entries_for(stack: StackClient, target: str) -> list[dict[str, Any]]:
    response = await _audit(stack, stack.admin_key, limit=500)
    assert response.status_code == 200, response.text
    return [e for e in response.json()["items"] if e["target"] == target]


async def test_dead_letter_replay_and_purge_are_audited(
    stack: StackClient, test_settings: Settings
) -> None:
    job_id = str(uuid.uuid4())
    body = json.dumps({"job_id": job_id, "not": "a document.uploaded"}).encode()
    await publish_raw(test_settings, "document.uploaded", body, f"audit-{job_id}")
    letters = await wait_for_dead_letters(stack, job_id, 1)
    first = letters[0]["id"]

    assert (await admin(stack, "POST", f"/v1/dead-letters/{first}/replay")).status_code == 200
    bulk = await admin(stack, "POST", "/v1/dead-letters/replay", json={"ids": [first]})
    assert bulk.status_code == 200 and bulk.json()["replayed"] == [first]
    assert (await admin(stack, "DELETE", f"/v1/dead-letters/{first}")).status_code == 204
    # Refused calls change nothing and record nothing.
    assert (await admin(stack, "DELETE", f"/v1/dead-letters/{first}")).status_code == 404
    tenant_delete = await admin(stack, "DELETE", f"/v1/dead-letters/{first}", key=stack.key)
    assert tenant_delete.status_code == 403

    actor = fingerprint(stack.admin_key)
    single = await _entries_for(stack, str(first))
    assert [(e["action"], e["actor"]) for e in single] == [
        ("dead_letter.purge", actor),
        ("dead_letter.replay", actor),
    ]
    assert single[0]["detail"]["job_id"] == job_id and single[1]["detail"]["job_id"] == job_id
    bulk_entry = (await _entries_for(stack, "ids"))[0]
    assert bulk_entry["action"] == "dead_letter.replay" and bulk_entry["detail"]["replayed"] == [
        first
    ]
    assert stack.admin_key not in json.dumps(single + [bulk_entry])


async def test_an_admins_cancel_is_audited_under_the_jobs_tenant(
    stack: StackClient, db_pool: asyncpg.Pool
) -> None:
    job_id = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri) VALUES ($1, 'dev', 'blob://none')", job_id
    )
    async with httpx.AsyncClient(base_url=stack.api, timeout=30) as client:
        response = await client.post(
            f"/v1/jobs/{job_id}/cancel", headers=stack.headers(stack.admin_key)
        )
    assert response.status_code == 202, response.text
    [entry] = await _entries_for(stack, str(job_id))
    assert (entry["action"], entry["tenant"], entry["actor"]) == (
        "job.cancel_as_admin",
        "dev",
        fingerprint(stack.admin_key),
    )
    assert entry["detail"] == {"requested": True}
    assert time.time() - _epoch(entry["at"]) < 120


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


async def test_the_audit_list_needs_an_admin_key_and_keeps_to_its_tenant(
    stack: StackClient, db_pool: asyncpg.Pool
) -> None:
    assert (await _audit(stack, stack.key)).status_code == 403
    assert (await admin(stack, "GET", "/v1/admin/audit", key="nope")).status_code == 401
    scoped_key, scoped = await key_store.add_key(
        db_pool, tenant="other", scopes=ALL_SCOPES, actor="test", label="other's admin"
    )
    _, dev_key = await key_store.add_key(
        db_pool, tenant="dev", scopes=frozenset({Scope.READ}), actor="test"
    )
    everything = (await _audit(stack, stack.admin_key, limit=500)).json()["items"]
    assert {scoped.key_id, dev_key.key_id} <= {e["target"] for e in everything}
    mine = (await _audit(stack, scoped_key, limit=500)).json()["items"]
    assert mine and {e["tenant"] for e in mine} == {"other"}
    assert scoped.key_id in {e["target"] for e in mine}
    # Limited to a tenant, the admin key opens no fleet-wide route.
    assert (await admin(stack, "GET", "/v1/dead-letters", key=scoped_key)).status_code == 403
    only_keys = (await _audit(stack, stack.admin_key, action="key.add")).json()["items"]
    assert only_keys and {e["action"] for e in only_keys} == {"key.add"}
    page = (await _audit(stack, stack.admin_key, limit=1)).json()
    older = (await _audit(stack, stack.admin_key, limit=1, before=page["next_before"])).json()
    assert older["items"][0]["id"] < page["items"][0]["id"]


async def test_the_audit_log_is_append_only(db_pool: asyncpg.Pool) -> None:
    _, added = await key_store.add_key(
        db_pool, tenant="dev", scopes=frozenset({Scope.READ}), actor="test"
    )
    entry = await db_pool.fetchval("SELECT id FROM audit_log WHERE target = $1", added.key_id)
    for statement in (
        "UPDATE audit_log SET actor = 'someone else' WHERE id = $1",
        "DELETE FROM audit_log WHERE id = $1",
    ):
        with pytest.raises(asyncpg.RaiseError, match="append-only"):
            await db_pool.execute(statement, entry)
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await db_pool.execute("TRUNCATE audit_log")
    assert await db_pool.fetchval("SELECT actor FROM audit_log WHERE id = $1", entry) == "test"
