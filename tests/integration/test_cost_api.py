"""GET /v1/jobs/{id}/cost and GET /v1/usage against real PostgreSQL: ledger rows as the
analyzer's engine writes them (settled, refused by a budget, and one whose answer was lost,
still reserved at its worst case), read through the progress routes with the service's keys."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from services.progress import cost_api
from shared.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(
    test_settings: Settings, db_pool: asyncpg.Pool
) -> AsyncIterator[httpx.AsyncClient]:
    """The cost routes on the progress service's dependencies (its pool and its keys)."""
    app = FastAPI()
    app.state.settings = test_settings
    app.state.ctx = SimpleNamespace(pool=db_pool, settings=test_settings)
    app.include_router(cost_api.router)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://progress") as http:
        yield http


def keys(settings: Settings) -> tuple[str, str, str, str]:
    """(a tenant's key, its tenant, another tenant's key, an admin key)."""
    (key, tenant), (other, _) = list(settings.tenants_by_key.items())[:2]
    return key, tenant, other, sorted(settings.admin_key_set)[0]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def make_job(pool: asyncpg.Pool, tenant: str) -> uuid.UUID:
    job_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO jobs (job_id, tenant, filename, document_uri) VALUES ($1, $2, 'a.pdf', 'x')",
        job_id,
        tenant,
    )
    return job_id


async def ledger_row(
    pool: asyncpg.Pool,
    job_id: uuid.UUID,
    tenant: str,
    *,
    task: str = "summary",
    model: str = "m1",
    outcome: str = "ok",
    tokens: tuple[int, int] = (100, 20),
    cost: float = 0.01,
    at: datetime | None = None,
) -> None:
    await pool.execute(
        "INSERT INTO llm_calls (call_id, job_id, tenant, task, chunk_id, attempt, model,"
        " prompt_version, outcome, input_tokens, output_tokens, cost_usd, reserved_usd,"
        " created_at) VALUES ($1, $2, $3, $4, $5, 1, $6, 'v1', $7, $8, $9, $10, $10, $11)",
        uuid.uuid4(),
        job_id,
        tenant,
        task,
        uuid.uuid4(),
        model,
        outcome,
        *tokens,
        cost,
        at or datetime.now(UTC),
    )


async def test_a_job_cost_comes_from_its_ledger_rows(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, test_settings: Settings
) -> None:
    key, tenant, other, admin = keys(test_settings)
    job_id = await make_job(db_pool, tenant)
    await ledger_row(db_pool, job_id, tenant, cost=0.02)
    await ledger_row(db_pool, job_id, tenant, task="classify", model="m2", tokens=(50, 2))
    # The answer was lost: still reserved, it counts at its worst case.
    await ledger_row(db_pool, job_id, tenant, outcome="reserved", tokens=(0, 0), cost=0.5)
    await ledger_row(db_pool, job_id, tenant, outcome="over_budget", tokens=(0, 0), cost=0)

    answer = await client.get(f"/v1/jobs/{job_id}/cost", headers=auth(key))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["job_id"] == str(job_id)
    assert body["calls"] == 4 and body["unsettled_calls"] == 1
    assert body["cost_usd"] == pytest.approx(0.53)
    assert body["tokens"] == 172 and body["input_tokens"] == 150
    assert body["by_task"]["summary"]["cost_usd"] == pytest.approx(0.52)
    assert body["by_model"]["m2"]["tokens"] == 52
    assert body["by_outcome"]["reserved"]["cost_usd"] == pytest.approx(0.5)
    assert body["by_outcome"]["over_budget"]["calls"] == 1
    assert body["by_stage"]["analyze"]["calls"] == 4

    # Another tenant's job does not exist for this key; an admin sees it.
    assert (await client.get(f"/v1/jobs/{job_id}/cost", headers=auth(other))).status_code == 404
    assert (await client.get(f"/v1/jobs/{job_id}/cost", headers=auth(admin))).status_code == 200
    assert (await client.get(f"/v1/jobs/{job_id}/cost")).status_code == 401
    unknown = await client.get(f"/v1/jobs/{uuid.uuid4()}/cost", headers=auth(key))
    assert unknown.status_code == 404
    assert (await client.get("/v1/jobs/not-a-uuid/cost", headers=auth(key))).status_code == 404


async def test_a_job_without_calls_costs_nothing(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, test_settings: Settings
) -> None:
    key, tenant, _, _ = keys(test_settings)
    job_id = await make_job(db_pool, tenant)
    body = (await client.get(f"/v1/jobs/{job_id}/cost", headers=auth(key))).json()
    assert body["calls"] == 0 and body["cost_usd"] == 0 and body["by_model"] == {}


def lines_of(body: dict[str, Any], tenant: str) -> list[dict[str, Any]]:
    return [line for line in body["lines"] if line["tenant"] == tenant]


async def test_usage_a_tenant_sees_its_own_and_an_admin_sees_all(
    client: httpx.AsyncClient, db_pool: asyncpg.Pool, test_settings: Settings
) -> None:
    key, tenant, other, admin = keys(test_settings)
    other_tenant = test_settings.tenants_by_key[other]
    # Days far in the past, so rows of other tests (written now) stay out of the window.
    day1 = datetime(2020, 3, 1, 10, tzinfo=UTC)
    day2 = day1 + timedelta(days=1)
    mine, theirs = await make_job(db_pool, tenant), await make_job(db_pool, other_tenant)
    await ledger_row(db_pool, mine, tenant, at=day1, cost=0.1)
    await ledger_row(db_pool, mine, tenant, at=day1, model="m2", cost=0.2)
    await ledger_row(db_pool, mine, tenant, at=day2, cost=0.4)
    await ledger_row(db_pool, theirs, other_tenant, at=day1, cost=1.0)
    window = {"since": "2020-03-01T00:00:00Z", "until": "2020-03-03T00:00:00Z"}

    own = await client.get("/v1/usage", params=window, headers=auth(key))
    assert own.status_code == 200, own.text
    body = own.json()
    assert body["tenant"] == tenant and set(body["by_tenant"]) == {tenant}
    assert [(line["day"], line["model"]) for line in body["lines"]] == [
        ("2020-03-01", "m1"),
        ("2020-03-01", "m2"),
        ("2020-03-02", "m1"),
    ]
    assert body["cost_usd"] == pytest.approx(0.7)
    forbidden = await client.get(
        "/v1/usage", params={**window, "tenant": other_tenant}, headers=auth(key)
    )
    assert forbidden.status_code == 403

    everyone = (await client.get("/v1/usage", params=window, headers=auth(admin))).json()
    assert everyone["tenant"] is None
    assert everyone["by_tenant"][tenant]["cost_usd"] == pytest.approx(0.7)
    assert everyone["by_tenant"][other_tenant]["cost_usd"] == pytest.approx(1.0)
    assert lines_of(everyone, other_tenant)[0]["day"] == "2020-03-01"
    one = await client.get(
        "/v1/usage", params={**window, "tenant": other_tenant}, headers=auth(admin)
    )
    assert set(one.json()["by_tenant"]) == {other_tenant}

    # until is exclusive; an empty window is refused.
    first_day = {"since": "2020-03-01T00:00:00Z", "until": "2020-03-02T00:00:00Z"}
    narrow = (await client.get("/v1/usage", params=first_day, headers=auth(key))).json()
    assert narrow["cost_usd"] == pytest.approx(0.3)
    empty = {"since": "2020-03-02T00:00:00Z", "until": "2020-03-01T00:00:00Z"}
    assert (await client.get("/v1/usage", params=empty, headers=auth(key))).status_code == 422
    assert (await client.get("/v1/usage")).status_code == 401
