"""Fair shares between tenants, end to end (services/ingest/admission.py, decision 1080).

Two stacks of their own, with tenants of their own (the session shares one database, so
counts of another test's tenant mean nothing here):
- `held_stack` runs ingest and progress without an extractor, so a job that is published
  stays in flight until the test ends it: the limits, the 429, the cancel of a queued job and
  the release when a job ends are exact, not races;
- `full_stack` runs every service: the in-flight limit holds while a backlog is processed
  (read from the job rows over time), and every queued job completes.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from shared.settings import Settings
from tests.integration.stack_client import StackClient
from tests.stack_fixture import own_stack

pytestmark = pytest.mark.integration

HELD_INFLIGHT = 2
HELD_PENDING = 5
FULL_INFLIGHT = 3


def _tenants(suffix: str) -> dict[str, str]:
    """key -> tenant, unique to this run."""
    return {f"fair-{name}-{suffix}": f"fair_{name}_{suffix}" for name in ("a", "b", "c")}


def _overrides(settings: Settings, keys: dict[str, str], inflight: int) -> dict[str, str]:
    tenants = list(keys.values())
    api_keys = ",".join(f"{k}={t}" for k, t in keys.items())
    return {
        "DOCPIPE_API_KEYS": f"{settings.api_keys},{api_keys}",
        "DOCPIPE_TENANT_INFLIGHT": _json({t: inflight for t in tenants}),
        "DOCPIPE_TENANT_PENDING": _json({tenants[0]: HELD_PENDING}),
        "DOCPIPE_TENANT_PRIORITY_CEILING": _json({tenants[2]: 9}),
        "DOCPIPE_ADMISSION_RETRY_AFTER_SECONDS": "7",
    }


def _json(value: dict[str, int]) -> str:
    return json.dumps(value)


@pytest.fixture(scope="module")
async def held_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[StackClient, dict[str, str]]]:
    keys = _tenants(uuid.uuid4().hex[:6])
    overrides = _overrides(test_settings, keys, HELD_INFLIGHT)
    async with own_stack(test_settings, "fairh", overrides, services=("ingest", "progress")) as c:
        yield c, keys


@pytest.fixture(scope="module")
async def full_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[StackClient, dict[str, str]]]:
    keys = _tenants(uuid.uuid4().hex[:6])
    overrides = _overrides(test_settings, keys, FULL_INFLIGHT)
    services = ("ingest", "extractor", "ocr", "analyzer", "progress")
    async with own_stack(test_settings, "fairf", overrides, services=services) as c:
        yield c, keys


def _text(n: int) -> bytes:
    return f"Fair share document {n} {uuid.uuid4()}.\n".encode() * 20


async def _submit(client: StackClient, key: str, n: int, **kw: Any) -> httpx.Response:
    return await client.submit(data=_text(n), name=f"doc{n}.txt", key=key, ocr="never", **kw)


async def _wait_until(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.05)
    return result


async def _held(db: asyncpg.Pool, tenant: str) -> set[uuid.UUID]:
    rows = await db.fetch("SELECT job_id FROM held_uploads WHERE tenant = $1", tenant)
    return {r["job_id"] for r in rows}


async def _published(db: asyncpg.Pool, job_id: str) -> bool:
    found: bool = await db.fetchval(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE payload->>'job_id' = $1 "
        "AND routing_key = 'document.uploaded' AND published_at IS NOT NULL)",
        job_id,
    )
    return found


async def _post(client: StackClient, path: str, headers: dict[str, str], body: Any) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{client.api}{path}", headers=headers, json=body)


async def test_jobs_beyond_the_limit_wait_queued_and_past_the_second_limit_429(
    held_stack: tuple[StackClient, dict[str, str]], db_pool: asyncpg.Pool
) -> None:
    client, keys = held_stack
    key, tenant = next(iter(keys.items()))
    # The first job: by URL under an Idempotency-Key, sent again once the tenant is full.
    idempotency = {**client.headers(key), "Idempotency-Key": f"fair-{uuid.uuid4()}"}
    by_url = {"url": "https://example.com/report.pdf"}
    responses = [await _post(client, "/v1/jobs", idempotency, by_url)]
    responses += [await _submit(client, key, n) for n in range(1, HELD_PENDING)]
    assert [r.status_code for r in responses] == [202] * HELD_PENDING
    assert {r.json()["status"] for r in responses} == {"queued"}
    job_ids = [r.json()["job_id"] for r in responses]
    # The first HELD_INFLIGHT are on the bus; the others wait, unpublished.
    waiting = HELD_PENDING - HELD_INFLIGHT
    published = [await _published(db_pool, j) for j in job_ids]
    assert published == [True] * HELD_INFLIGHT + [False] * waiting
    assert await _held(db_pool, tenant) == {uuid.UUID(j) for j in job_ids[HELD_INFLIGHT:]}
    views = [(await client.job(j, key)).json() for j in job_ids]
    assert {v["status"] for v in views} == {"queued"}

    refused = await _submit(client, key, 99)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "7"
    assert refused.json() == {
        "detail": f"This tenant already has {HELD_PENDING} jobs queued or in progress, its "
        "limit; try again in 7 s, when some have finished."
    }
    batch = await _post(
        client, "/v1/batches", client.headers(key), {"urls": ["https://example.com/a.pdf"]}
    )
    assert batch.status_code == 429 and batch.headers["retry-after"] == "7"
    # A reused Idempotency-Key still gets its job back: nothing new is admitted.
    replay = await _post(client, "/v1/jobs", idempotency, by_url)
    assert replay.status_code == 200 and replay.json()["job_id"] == job_ids[0]
    await _cancel_queued_then_free_a_slot(client, key, tenant, job_ids, db_pool)


async def _cancel_queued_then_free_a_slot(
    client: StackClient, key: str, tenant: str, job_ids: list[str], db_pool: asyncpg.Pool
) -> None:
    # Cancelling a queued (held) job: it ends cancelled and is never published.
    queued = job_ids[-1]
    cancel = await _post(client, f"/v1/jobs/{queued}/cancel", client.headers(key), None)
    assert cancel.status_code == 202, cancel.text
    final = await client.wait_ended(queued, key, timeout=30)
    assert final["status"] == "cancelled"
    assert uuid.UUID(queued) not in await _held(db_pool, tenant)
    assert not await _published(db_pool, queued)

    # A job that ends frees its slot: the next held job (in submitted order) is published.
    await _post(client, f"/v1/jobs/{job_ids[0]}/cancel", client.headers(key), None)
    await _wait_until(lambda: _published(db_pool, job_ids[HELD_INFLIGHT]))
    assert not await _published(db_pool, job_ids[HELD_INFLIGHT + 1])
    assert await _held(db_pool, tenant) == {uuid.UUID(job_ids[HELD_INFLIGHT + 1])}
    assert not await _published(db_pool, queued)


async def test_a_batch_under_the_limit_is_taken_whole_most_of_it_queued(
    held_stack: tuple[StackClient, dict[str, str]], db_pool: asyncpg.Pool
) -> None:
    client, keys = held_stack
    key, tenant = list(keys.items())[1]
    urls = [f"https://example.com/doc{n}.pdf" for n in range(40)]
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(
            f"{client.api}/v1/batches", headers=client.headers(key), json={"urls": urls}
        )
    assert response.status_code == 202, response.text
    job_ids = [j["job_id"] for j in response.json()["jobs"]]
    assert len(job_ids) == 40
    # In submitted order: the first ones start, the rest wait.
    assert await _held(db_pool, tenant) == {uuid.UUID(j) for j in job_ids[HELD_INFLIGHT:]}
    # A batch cancel forgets its held jobs: none is ever published.
    async with httpx.AsyncClient(timeout=30) as http:
        batch_id = response.json()["batch_id"]
        cancel = await http.post(
            f"{client.api}/v1/batches/{batch_id}/cancel", headers=client.headers(key)
        )
    assert cancel.status_code == 202, cancel.text
    assert await _held(db_pool, tenant) == set()
    for job_id in job_ids:
        assert (await client.wait_ended(job_id, key, timeout=30))["status"] == "cancelled"
    assert [await _published(db_pool, j) for j in job_ids[HELD_INFLIGHT:]] == [False] * 38


async def test_a_priority_above_the_ceiling_is_422_with_a_sentence(
    held_stack: tuple[StackClient, dict[str, str]],
) -> None:
    client, keys = held_stack
    (key, _), _, (trusted_key, _) = list(keys.items())
    refused = await _submit(client, key, 1, priority=7)
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "priority"]
    assert error["msg"] == (
        "Priority 7 is above this tenant's ceiling of 5; use a priority from 0 to 5."
    )
    async with httpx.AsyncClient(timeout=30) as http:
        by_url = await http.post(
            f"{client.api}/v1/jobs",
            headers=client.headers(key),
            json={"url": "https://example.com/a.pdf", "priority": 6},
        )
        batch = await http.post(
            f"{client.api}/v1/batches",
            headers=client.headers(key),
            json={"urls": ["https://example.com/a.pdf"], "options": {"priority": 9}},
        )
    assert by_url.status_code == 422 and by_url.json()["detail"][0]["loc"] == ["body", "priority"]
    assert batch.status_code == 422
    assert batch.json()["detail"][0]["loc"] == ["body", "options", "priority"]
    # A tenant whose ceiling is raised may use it.
    allowed = await _submit(client, trusted_key, 2, priority=9)
    assert allowed.status_code == 202, allowed.text


async def test_the_in_flight_limit_holds_while_a_backlog_is_processed(
    full_stack: tuple[StackClient, dict[str, str]], db_pool: asyncpg.Pool
) -> None:
    client, keys = full_stack
    key, tenant = next(iter(keys.items()))
    total = 15
    responses = await asyncio.gather(*(_submit(client, key, n) for n in range(total)))
    assert [r.status_code for r in responses] == [202] * total
    job_ids = [r.json()["job_id"] for r in responses]

    # Per sample: the tenant's jobs running (status processing), in flight (not ended, with
    # its document.uploaded published: on its way to or in the workers), and held.
    samples: list[tuple[int, int, int]] = []

    async def sample() -> bool:
        row = await db_pool.fetchrow(
            """
            SELECT count(*) FILTER (WHERE j.status = 'processing') AS running,
                   count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM outbox o
                       WHERE o.payload->>'job_id' = j.job_id::text
                         AND o.routing_key = 'document.uploaded'
                         AND o.published_at IS NOT NULL)) AS in_flight,
                   (SELECT count(*) FROM held_uploads h WHERE h.tenant = $1) AS held
            FROM jobs j WHERE j.tenant = $1 AND j.status IN ('queued', 'processing')
            """,
            tenant,
        )
        assert row is not None
        samples.append((row["running"], row["in_flight"], row["held"]))
        return bool(row["in_flight"] + row["held"] == 0)

    await _wait_until(sample, timeout=180)
    statuses = [(await client.job(j, key)).json()["status"] for j in job_ids]
    assert statuses == ["completed"] * total
    running, in_flight, held = (max(column) for column in zip(*samples, strict=True))
    assert running <= in_flight <= FULL_INFLIGHT, samples
    assert running >= 1 and in_flight == FULL_INFLIGHT  # the samples saw the limit reached
    assert held >= 1  # ...and jobs waiting for a slot
    assert len(samples) >= 10
    assert await _held(db_pool, tenant) == set()
