"""Webhooks end to end: a job submitted over HTTP with a callback URL completes, and a real
receiver (verifying the signature, answering 500 twice and then 200) sees its job.completed
exactly once as a success; the job's webhook listing shows the three attempts, only to its
tenant; an admin's redelivery sends it again under the same webhook-id.

A stack of its own runs with fast retries and private URLs allowed (the receiver listens on
127.0.0.1)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from scripts.stack import Stack
from shared.settings import Settings
from tests.conftest import delete_bus
from tests.fixtures import pdf_with_pages
from tests.integration.conftest import ARTIFACTS, stack_env
from tests.integration.stack_client import StackClient
from tests.support.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0zMi1ieXRlcy1sb25nISE="


@pytest.fixture(scope="module")
async def webhook_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[StackClient]:
    settings = test_settings.model_copy(
        update={
            "bus_prefix": f"{test_settings.bus_prefix}_wh",
            "database_url": f"{test_settings.database_url}_wh",
        }
    )
    env = {
        **stack_env(settings),
        "DOCPIPE_ALLOW_PRIVATE_URLS": "true",
        "DOCPIPE_WEBHOOK_SECRETS": f"dev={SECRET}",
        "DOCPIPE_WEBHOOK_RETRY_DELAYS_SECONDS": "[0.2, 0.2, 0.2, 0.2]",
        "DOCPIPE_WEBHOOK_POLL_SECONDS": "0.1",
    }
    running = Stack(env, log_dir=ARTIFACTS / "logs" / settings.bus_prefix)
    await running.start()
    try:
        await running.wait_ready(90)
        key, other = list(settings.tenants_by_key)[:2]
        yield StackClient(running, key=key, other_key=other, admin_key="admin-key")
    finally:
        await running.stop()
        await delete_bus(settings)
        from shared.db import drop_database

        await drop_database(settings.database_url)


async def submit(client: StackClient, path: Path, callback_url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{client.api}/v1/jobs",
            headers=client.headers(),
            files={"file": (path.name, path.read_bytes())},
            data={"callback_url": callback_url},
        )


async def webhooks_of(client: StackClient, job_id: str, key: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(
            f"{client.stack.url('progress')}/v1/jobs/{job_id}/webhooks",
            headers=client.headers(key),
        )


async def listed_attempts(client: StackClient, job_id: str, count: int) -> dict[str, Any]:
    """The job's one delivery, once it shows `count` attempts (recorded after the answer)."""
    async with asyncio.timeout(30):
        while True:
            response = await webhooks_of(client, job_id)
            assert response.status_code == 200, response.text
            items = response.json()["items"]
            if items and len(items[0]["history"]) >= count:
                assert len(items) == 1
                delivery: dict[str, Any] = items[0]
                return delivery
            await asyncio.sleep(0.1)


async def test_a_completed_job_calls_back_once_through_retries(
    webhook_stack: StackClient, tmp_path: Path
) -> None:
    client = webhook_stack
    doc = pdf_with_pages(tmp_path / "hooked.pdf", ["Invoice 7", "Total: $12"])
    with WebhookReceiver(SECRET, failures=2) as receiver:
        response = await submit(client, doc, receiver.url)
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert (await client.wait(job_id))["status"] == "completed"
        (success,) = await asyncio.to_thread(receiver.wait_for, 1, 30)
        event = success.event
        assert event["type"] == "job.completed"
        assert event["data"]["job_id"] == job_id
        assert event["data"]["status"] == "completed"
        assert event["data"]["result_url"].endswith(f"/v1/jobs/{job_id}/result")
        assert [r.answered for r in receiver.received] == [500, 500, 200]
        assert all(r.verified for r in receiver.received)
        assert receiver.successes() == {success.webhook_id: 1}

        delivery = await listed_attempts(client, job_id, 3)
        assert (delivery["status"], delivery["webhook_id"]) == ("delivered", success.webhook_id)
        history = delivery["history"]
        assert [a["status_code"] for a in history] == [500, 500, 200]
        assert [a["attempt"] for a in history] == [1, 2, 3]
        assert history[0]["error"] == "The receiver answered 500."
        assert (await webhooks_of(client, job_id, client.other_key)).status_code == 404

        async with httpx.AsyncClient(timeout=30) as http:
            url = f"{client.stack.url('progress')}/v1/admin/webhooks"
            redo = await http.post(
                f"{url}/{delivery['delivery_id']}/redeliver", headers=client.headers(client.key)
            )
            assert redo.status_code == 403, "tenants cannot redeliver"
            redo = await http.post(
                f"{url}/{delivery['delivery_id']}/redeliver",
                headers=client.headers(client.admin_key),
            )
            assert redo.status_code == 202, redo.text
        await asyncio.to_thread(receiver.wait_for, 2, 30)
        assert receiver.successes() == {success.webhook_id: 2}
        assert [a["status_code"] for a in (await listed_attempts(client, job_id, 4))["history"]][
            -1
        ] == 200


async def test_a_callback_url_that_cannot_be_called_back_is_refused_at_submit(
    webhook_stack: StackClient, tmp_path: Path
) -> None:
    doc = pdf_with_pages(tmp_path / "bad.pdf", ["Nothing to see"])
    response = await submit(webhook_stack, doc, "ftp://example.com/hook")
    assert response.status_code == 422
    assert "http or https" in response.text


async def test_a_batchs_webhooks_are_listed_only_to_its_tenant(
    webhook_stack: StackClient, test_settings: Settings
) -> None:
    batch_id = uuid.uuid4()
    conn = await asyncpg.connect(f"{test_settings.database_url}_wh")
    try:
        await conn.execute("INSERT INTO batches (batch_id, tenant) VALUES ($1, 'other')", batch_id)
    finally:
        await conn.close()
    url = f"{webhook_stack.stack.url('progress')}/v1/batches/{batch_id}/webhooks"
    async with httpx.AsyncClient(timeout=30) as http:
        mine = await http.get(url, headers=webhook_stack.headers(webhook_stack.other_key))
        assert mine.status_code == 200, mine.text
        assert mine.json() == {"items": []}
        theirs = await http.get(url, headers=webhook_stack.headers(webhook_stack.key))
        assert theirs.status_code == 404
