"""Keys against the real services: stored hashed, added/rotated/revoked with no restart (the
`docpipe keys` CLI), every route of ingest and progress refusing a key without its scope, and
no service starting without a key outside dev."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from websockets.exceptions import ConnectionClosed

from scripts.stack import stack_ports
from services.ingest.app import create_app as create_ingest
from services.progress.app import create_app as create_progress
from shared import keys as key_store
from shared.auth import NO_KEYS, KeyResolver, missing_scope
from shared.db import drop_database
from shared.keys import ALL_SCOPES, Scope
from shared.settings import Settings
from tests.integration.stack_client import StackClient
from tests.stack_fixture import refused_start

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Routes every caller may reach without a key: the probes, the metrics, the docs, the page.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
PUBLIC_PREFIXES = ("/redoc", "/admin")


def _scope_of(route: APIRoute | APIWebSocketRoute) -> Scope | None:
    """The scope the route's dependencies demand (require_scope marks its check)."""
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        scope = getattr(dependant.call, "scope", None)
        if isinstance(scope, Scope):
            return scope
        pending.extend(dependant.dependencies)
    return None


def _all_routes(routes: list[Any]) -> list[Any]:
    """Every route, included routers opened (FastAPI keeps them as one entry each; their
    routes carry their router's prefix already)."""
    out: list[Any] = []
    for route in routes:
        router = getattr(route, "original_router", None)
        out += _all_routes(router.routes) if router is not None else [route]
    return out


def _protected_routes(app: FastAPI) -> list[tuple[str, str, Scope | None]]:
    """(method, path, scope) of every route behind a key; WebSockets as method "WS"."""
    out: list[tuple[str, str, Scope | None]] = []
    for route in _all_routes(app.routes):
        path = getattr(route, "path", "")
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        if isinstance(route, APIRoute):
            out += [(method, path, _scope_of(route)) for method in sorted(route.methods or ())]
        elif isinstance(route, APIWebSocketRoute):
            out.append(("WS", path, None))
    return out


WS_SCOPES = {
    "/v1/jobs/{job_id}/events": Scope.READ,
    "/v1/batches/{batch_id}/events": Scope.READ,
    "/v1/admin/events": Scope.ADMIN,
}


def test_every_route_names_its_scope() -> None:
    """A route added without a scope fails here (and is then left out of the matrix)."""
    routes = [*_protected_routes(create_ingest()), *_protected_routes(create_progress())]
    unscoped = [(m, p) for m, p, scope in routes if scope is None and m != "WS"]
    assert unscoped == []
    assert {p for m, p, _ in routes if m == "WS"} == set(WS_SCOPES)
    assert len(routes) >= 15


@pytest.fixture(scope="module")
async def lacking(db_pool: asyncpg.Pool) -> dict[Scope, str]:
    """For each scope, a key of tenant "dev" with every other scope."""
    out: dict[Scope, str] = {}
    for scope in Scope:
        key, _ = await key_store.add_key(
            db_pool, tenant="dev", scopes=ALL_SCOPES - {scope}, actor="test", label=f"no {scope}"
        )
        out[scope] = key
    return out


def _concrete(path: str) -> str:
    return (
        path.replace("{job_id}", str(uuid.uuid4()))
        .replace("{dead_letter_id}", "1")
        .replace("{batch_id}", str(uuid.uuid4()))
    )


async def test_each_route_refuses_a_key_lacking_its_scope(
    stack: StackClient, lacking: dict[Scope, str]
) -> None:
    bases = {"ingest": stack.api, "progress": stack.stack.url("progress")}
    apps = {"ingest": create_ingest(), "progress": create_progress()}
    tried = 0
    async with httpx.AsyncClient(timeout=30) as client:
        for service, app in apps.items():
            for method, path, scope in _protected_routes(app):
                if method == "WS":
                    continue
                assert scope is not None
                response = await client.request(
                    method, bases[service] + _concrete(path), headers=stack.headers(lacking[scope])
                )
                assert response.status_code == 403, (method, path, response.text)
                assert response.json()["detail"] == missing_scope(scope), (method, path)
                # The same route with the scope gets past the check (whatever it answers then).
                holder = next(k for s, k in lacking.items() if s is not scope)
                allowed = await client.request(
                    method, bases[service] + _concrete(path), headers=stack.headers(holder)
                )
                assert allowed.status_code != 403 or allowed.json()["detail"] != missing_scope(
                    scope
                ), (method, path)
                tried += 1
    assert tried >= 15
    for path, scope in WS_SCOPES.items():
        url = stack.ws + _concrete(path)
        headers = {"Authorization": f"Bearer {lacking[scope]}"}
        async with websockets.connect(url, additional_headers=headers) as conn:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4403, missing_scope(scope))


async def test_keys_are_stored_hashed_and_every_change_is_audited(db_pool: asyncpg.Pool) -> None:
    key, added = await key_store.add_key(
        db_pool, tenant="acme", scopes=frozenset({Scope.READ}), actor="tester", label="ci"
    )
    stored = await db_pool.fetchrow("SELECT * FROM api_keys WHERE key_id = $1", added.key_id)
    assert stored is not None and bytes(stored["key_sha256"]) == key_store.key_digest(key)
    assert key not in json.dumps({k: str(v) for k, v in dict(stored).items()})

    new_key, replacement, old = await key_store.rotate_key(db_pool, added.key_id, actor="tester")
    assert new_key != key and old.rotated_to == replacement.key_id and not old.active
    assert (replacement.tenant, replacement.scopes, replacement.label) == (
        "acme",
        added.scopes,
        "ci",
    )
    with pytest.raises(key_store.KeyChangeRefused, match="was revoked"):
        await key_store.revoke_key(db_pool, added.key_id, actor="tester")
    await key_store.revoke_key(db_pool, replacement.key_id, actor="tester")
    with pytest.raises(key_store.KeyChangeRefused, match="No key"):
        await key_store.revoke_key(db_pool, "k-none", actor="tester")
    with pytest.raises(key_store.KeyChangeRefused, match="--tenant"):
        await key_store.add_key(db_pool, tenant=None, scopes=frozenset({Scope.READ}), actor="t")

    rows = await db_pool.fetch(
        "SELECT actor, action, target, tenant FROM audit_log WHERE target = ANY($1) ORDER BY id",
        [added.key_id, replacement.key_id],
    )
    assert [(r["action"], r["target"]) for r in rows] == [
        ("key.add", added.key_id),
        ("key.rotate", added.key_id),
        ("key.revoke", replacement.key_id),
    ]
    assert {(r["actor"], r["tenant"]) for r in rows} == {("tester", "acme")}


async def test_a_revoked_key_stops_working_within_the_cache_time(db_pool: asyncpg.Pool) -> None:
    resolver = KeyResolver(Settings(env="production", key_cache_seconds=0.3))
    key, added = await key_store.add_key(
        db_pool, tenant="acme", scopes=frozenset({Scope.READ}), actor="t"
    )
    principal = await resolver.resolve(key, db_pool)
    assert principal is not None and principal.key_id == added.key_id
    assert principal.tenant == "acme" and not principal.all_tenants
    await key_store.revoke_key(db_pool, added.key_id, actor="t")
    assert await resolver.resolve(key, db_pool) == principal  # cached for at most 0.3 s
    await asyncio.sleep(0.35)
    assert await resolver.resolve(key, db_pool) is None


async def _cli(database_url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "docpipe_cli",
        "keys",
        "--database-url",
        database_url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _status_within(client: httpx.AsyncClient, url: str, key: str, want: int) -> None:
    deadline = time.monotonic() + 15
    while (
        status := (await client.get(url, headers={"Authorization": f"Bearer {key}"})).status_code
    ) != want:
        assert time.monotonic() < deadline, f"still {status}, not {want}"
        await asyncio.sleep(0.25)


async def test_the_cli_adds_rotates_and_revokes_keys_of_a_running_stack(
    stack: StackClient, test_settings: Settings
) -> None:
    db = test_settings.database_url
    code, out, err = await _cli(db, "add", "--tenant", "dev", "--scope", "read", "--label", "cli")
    assert code == 0, err
    key = out.strip()
    assert key.startswith(key_store.KEY_PREFIX) and "shown once" in err
    key_id = key.split("_")[1]
    url = f"{stack.api}/v1/jobs"
    async with httpx.AsyncClient(timeout=30) as client:
        await _status_within(client, url, key, 200)
        upload = await client.post(url, headers={"Authorization": f"Bearer {key}"})
        assert upload.status_code == 403 and "'submit'" in upload.json()["detail"]

        code, out, err = await _cli(db, "list", "--json")
        assert code == 0, err
        listed = {item["key_id"]: item for item in map(json.loads, out.splitlines())}
        assert listed[key_id]["tenant"] == "dev" and listed[key_id]["scopes"] == ["read"]
        assert key not in out

        code, out, err = await _cli(db, "rotate", key_id)
        assert code == 0, err
        rotated = out.strip()
        await _status_within(client, url, rotated, 200)
        await _status_within(client, url, key, 401)

        code, _, err = await _cli(db, "revoke", rotated.split("_")[1])
        assert code == 0, err
        await _status_within(client, url, rotated, 401)
        code, _, err = await _cli(db, "add", "--scope", "read")
        assert code == 1 and "--tenant" in err


@pytest.fixture
async def empty_database(test_settings: Settings) -> AsyncIterator[str]:
    url = test_settings.database_url + "_nokeys"
    yield url
    await drop_database(url)


@pytest.mark.parametrize("service", ["ingest", "progress"])
async def test_a_service_without_keys_refuses_to_start_outside_dev(
    service: str, test_settings: Settings, empty_database: str, rabbit_available: None
) -> None:
    env: dict[str, Any] = {
        **os.environ,
        **stack_ports(),
        "DOCPIPE_ENV": "production",
        "DOCPIPE_API_KEYS": "",
        "DOCPIPE_ADMIN_KEYS": "",
        "DOCPIPE_DATABASE_URL": empty_database,
        "DOCPIPE_AMQP_URL": test_settings.amqp_url,
        "DOCPIPE_BUS_PREFIX": test_settings.bus_prefix + "_nokeys",
        "DOCPIPE_BLOB_DIR": str(test_settings.blob_dir),
    }
    assert NO_KEYS in await refused_start(service, env)
