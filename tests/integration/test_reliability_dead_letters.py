"""Dead letters end to end: recorded in PostgreSQL from the DLQs, listed, inspected, purged
and replayed through the API and the CLI; a replay that now succeeds completes its job."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from typer.testing import CliRunner

from docpipe_cli.commands import app as cli
from scripts.stack import Stack
from shared.events import DocumentUploaded
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_bus
from tests.integration.conftest import ARTIFACTS, stack_env
from tests.integration.stack_client import StackClient, publish_as_upstream

pytestmark = pytest.mark.integration


async def publish_raw(
    settings: Settings, routing_key: str, body: bytes, message_id: str | None
) -> None:
    """Publish bytes onto the topic exchange as an upstream application might."""
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(Topology.from_settings(settings).exchange_name)
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                content_type="application/json",
                headers={"x-event-type": routing_key},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
    finally:
        await connection.close()


async def admin(
    client: StackClient, method: str, path: str, *, key: str | None = None, **kw: Any
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=client.stack.url("progress"), timeout=30) as http:
        return await http.request(
            method, path, headers=client.headers(key or client.admin_key), **kw
        )


async def wait_for_dead_letters(
    client: StackClient, job_id: str, count: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        items = (await admin(client, "GET", "/v1/dead-letters", params={"job_id": job_id})).json()[
            "items"
        ]
        if len(items) >= count:
            return items
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(items)} of {count} dead letters after {timeout:g} s")
        await asyncio.sleep(0.2)


async def test_malformed_messages_are_recorded_once_and_password_is_stripped(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    prefix = test_settings.bus_prefix
    job_id = str(uuid.uuid4())
    # Valid JSON, but not a valid document.uploaded (no document_uri, an unknown field).
    body = json.dumps({"job_id": job_id, "password": "s3cret", "bogus": 1}).encode()
    message_id = f"malformed-{job_id}"
    await publish_raw(test_settings, "document.uploaded", body, message_id)
    # The extractor and the progress service both receive document.uploaded: two dead letters.
    items = await wait_for_dead_letters(stack, job_id, 2)
    assert {i["queue"] for i in items} == {f"{prefix}.extractor", f"{prefix}.progress"}
    for item in items:
        assert item["reason"] == "malformed"
        assert item["routing_key"] == "document.uploaded"
        assert item["attempts"] == 0
        assert item["message_id"] == message_id
        assert item["replayed_at"] is None and item["replay_count"] == 0
        assert "ValidationError" in item["error"]
        assert set(item) == {
            "id", "message_id", "queue", "routing_key", "reason", "error", "attempts",
            "job_id", "created_at", "replayed_at", "replay_count",
        }  # fmt: skip

    # The same dead message again (same message id): nothing new is recorded. A second dead
    # message follows it down the same queues: once that one is recorded, the repeat has been
    # handled too (each queue is FIFO), so the count below is final, not a guess after a sleep.
    await publish_raw(test_settings, "document.uploaded", body, message_id)
    sentinel = str(uuid.uuid4())
    sentinel_body = json.dumps({"job_id": sentinel, "bogus": 2}).encode()
    await publish_raw(test_settings, "document.uploaded", sentinel_body, f"malformed-{sentinel}")
    await wait_for_dead_letters(stack, sentinel, 2)
    items_after = (await admin(stack, "GET", "/v1/dead-letters", params={"job_id": job_id})).json()
    assert len(items_after["items"]) == 2

    extractor_item = next(i for i in items if i["queue"].endswith(".extractor"))
    detail = (await admin(stack, "GET", f"/v1/dead-letters/{extractor_item['id']}")).json()
    assert detail["payload"] == {"job_id": job_id, "bogus": 1}
    assert detail["headers"]["x-dead-letter-reason"] == "malformed"
    stored = await db_pool.fetchval("SELECT body FROM dead_letters WHERE id = $1", detail["id"])
    assert b"s3cret" not in bytes(stored)

    # Filters: by queue (group name or queue name) and reason; pagination by cursor.
    by_group = await admin(
        stack, "GET", "/v1/dead-letters", params={"queue": "extractor", "job_id": job_id}
    )
    assert [i["id"] for i in by_group.json()["items"]] == [extractor_item["id"]]
    page = (
        await admin(stack, "GET", "/v1/dead-letters", params={"job_id": job_id, "limit": 1})
    ).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = (
        await admin(
            stack,
            "GET",
            "/v1/dead-letters",
            params={"job_id": job_id, "limit": 1, "cursor": page["next_cursor"]},
        )
    ).json()
    assert len(rest["items"]) == 1 and rest["items"][0]["id"] < page["items"][0]["id"]
    assert rest["next_cursor"] is None

    # Admin keys only.
    assert (await admin(stack, "GET", "/v1/dead-letters", key="nope")).status_code == 401
    assert (await admin(stack, "GET", "/v1/dead-letters", key=stack.key)).status_code == 403

    # Replaying a still-malformed message dead-letters it again: a new row, history kept.
    replayed = await admin(stack, "POST", f"/v1/dead-letters/{extractor_item['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replay_count"] == 1 and replayed.json()["replayed_at"]
    items = await wait_for_dead_letters(stack, job_id, 3)
    again = [i for i in items if i["queue"].endswith(".extractor") and i["replay_count"] == 0]
    assert len(again) == 1 and again[0]["id"] > extractor_item["id"]
    headers = (await admin(stack, "GET", f"/v1/dead-letters/{again[0]['id']}")).json()["headers"]
    assert headers["x-docpipe-replay"] == f"{extractor_item['id']}.1"

    # Purge, then it is gone.
    assert (await admin(stack, "DELETE", f"/v1/dead-letters/{again[0]['id']}")).status_code == 204
    assert (await admin(stack, "GET", f"/v1/dead-letters/{again[0]['id']}")).status_code == 404
    assert (await admin(stack, "DELETE", f"/v1/dead-letters/{again[0]['id']}")).status_code == 404
    assert (await admin(stack, "POST", "/v1/dead-letters/999999999/replay")).status_code == 404
    bulk = await admin(stack, "POST", "/v1/dead-letters/replay", json={})
    assert bulk.status_code == 422


# --- a replay that now succeeds completes its job -------------------------------------------


class FlakyServer:
    """Serves one text document over HTTP, answering 503 until told to recover."""

    def __init__(self) -> None:
        self.healthy = False
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the stdlib names it
                outer.requests += 1
                if not outer.healthy:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"Recovered document.\nThe replay brought this job back to life.\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/doc.txt"

    @contextlib.contextmanager
    def running(self) -> Iterator[FlakyServer]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
async def private_url_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[StackClient, Settings]]:
    """The pipeline without ingest and OCR, on its own bus prefix, allowed to download from
    127.0.0.1 (where the flaky server runs)."""
    settings = test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_dl"})
    env = {**stack_env(settings), "DOCPIPE_ALLOW_PRIVATE_URLS": "true"}
    running = Stack(
        env,
        services=("ingest", "extractor", "analyzer", "progress"),
        log_dir=ARTIFACTS / "logs" / settings.bus_prefix,
    )
    await running.start()
    try:
        await running.wait_ready(90)
        key, other = list(settings.tenants_by_key)[:2]
        admin_key = sorted(settings.admin_key_set)[0]
        yield StackClient(running, key=key, other_key=other, admin_key=admin_key), settings
    finally:
        await running.stop()
        await delete_bus(settings)


async def wait_status(
    client: StackClient, job_id: str, status: str, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = (await client.job(job_id)).json()
        if body.get("status") == status:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is {body.get('status')}, not {status}: {body}")
        await asyncio.sleep(0.2)


async def test_replay_revives_the_failed_job_and_completes_it(
    private_url_stack: tuple[StackClient, Settings],
) -> None:
    client, settings = private_url_stack
    with FlakyServer().running() as server:
        event = DocumentUploaded(
            job_id=uuid.uuid4(),
            tenant=settings.tenants_by_key[client.key],
            document_uri=server.url,
            filename="flaky.txt",
        )
        job_id = str(event.job_id)
        await publish_as_upstream(settings, event)

        # 503 every time: three retries, then the dead-letter queue and a failed job.
        failed = await wait_status(client, job_id, "failed")
        assert "dead-letter queue" in failed["error"]
        (item,) = await wait_for_dead_letters(client, job_id, 1)
        assert item["queue"] == f"{settings.bus_prefix}.extractor"
        assert item["reason"] == "retries-exhausted"
        assert item["attempts"] == 3 and "HTTPStatusError" in item["error"]
        assert server.requests == 4

        # The server recovers; the operator replays with the CLI.
        server.healthy = True
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["dlq", "--progress-url", client.stack.url("progress"),
             "--admin-key", client.admin_key, "replay", str(item["id"])],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "Replayed 1" in result.output and job_id in result.output

        done = await wait_status(client, job_id, "completed")
        assert done["error"] is None
        text = (await client.result(job_id)).json()["text"]
        assert "brought this job back to life" in text

    listed = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["dlq", "--progress-url", client.stack.url("progress"),
         "--admin-key", client.admin_key, "list", "--job", job_id, "--json"],
        catch_exceptions=False,
    )  # fmt: skip
    assert listed.exit_code == 0, listed.output
    (listed_item,) = json.loads(listed.output)["items"]
    assert listed_item["reason"] == "retries-exhausted" and listed_item["replay_count"] == 1
    after = (await admin(client, "GET", f"/v1/dead-letters/{item['id']}")).json()
    assert after["replay_count"] == 1 and after["replayed_at"] is not None
    # Nothing died again.
    assert len(await wait_for_dead_letters(client, job_id, 1)) == 1
