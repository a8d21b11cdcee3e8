"""WebSocket tickets against the real services: a browser trades its key (in a header) for a
short-lived ticket for one job and follows the job with ?ticket=; a long-lived key in ?token=
is refused outside dev; neither keys nor tickets reach a log line."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from scripts.stack import Stack, stack_ports
from shared.auth import TOKEN_REFUSED
from shared.events import TERMINAL_STATUSES
from shared.settings import Settings
from tests.integration.stack_client import StackClient
from tests.stack_fixture import ARTIFACTS, stack_env

pytestmark = pytest.mark.integration

ISSUED: list[str] = []  # every ticket these tests obtained, for the log check


async def _ticket(stack: StackClient, path: str, key: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(stack.stack.url("progress") + path, headers=stack.headers(key))
    if response.status_code == 200:
        ISSUED.append(response.json()["ticket"])
    return response


async def _close_of(url: str, **kw: Any) -> tuple[int, str]:
    """The close code and reason the server ends the connection with."""
    async with websockets.connect(url, **kw) as conn:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(conn.recv(), 30)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def _follow(url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with asyncio.timeout(120), websockets.connect(url) as conn:
        async for raw in conn:
            messages.append(json.loads(raw))
            if messages[-1].get("status") in TERMINAL_STATUSES:
                break
    return messages


async def test_a_ticket_follows_its_job_and_no_other(stack: StackClient, tmp_path: Path) -> None:
    doc = tmp_path / "ticketed.txt"
    doc.write_text("Followed with a ticket, not a key.\n")
    job_id = await stack.submit_ok(doc)
    response = await _ticket(stack, f"/v1/jobs/{job_id}/ws-ticket", stack.key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["events"] == f"/v1/jobs/{job_id}/events?ticket={quote(body['ticket'], safe='')}"
    messages = await _follow(stack.ws + body["events"])
    assert messages[-1]["status"] == "completed" and messages[-1]["job_id"] == job_id
    assert stack.key not in body["ticket"]

    # Another tenant gets no ticket for the job; the ticket opens no other job.
    other = await _ticket(stack, f"/v1/jobs/{job_id}/ws-ticket", stack.other_key)
    assert other.status_code == 404
    second = await stack.submit_ok(doc)
    code, reason = await _close_of(f"{stack.ws}/v1/jobs/{second}/events?ticket={body['ticket']}")
    assert (code, reason) == (4401, "The ticket is for another job, not this one.")
    code, reason = await _close_of(f"{stack.ws}/v1/jobs/{job_id}/events?ticket=v1.forged.sig")
    assert code == 4401 and "signature" in reason
    # An admin ticket is for the admin stream only, and only an admin key gets one.
    assert (await _ticket(stack, "/v1/admin/ws-ticket", stack.key)).status_code == 403
    admin = await _ticket(stack, "/v1/admin/ws-ticket", stack.admin_key)
    assert admin.status_code == 200
    code, _ = await _close_of(f"{stack.ws}/v1/jobs/{job_id}/events?ticket={admin.json()['ticket']}")
    assert code == 4401


async def test_the_admin_stream_opens_with_a_ticket(stack: StackClient, tmp_path: Path) -> None:
    admin = await _ticket(stack, "/v1/admin/ws-ticket", stack.admin_key)
    doc = tmp_path / "watched.txt"
    doc.write_text("Watched by the admin stream.\n")
    async with websockets.connect(stack.ws + admin.json()["events"]) as conn:
        job_id = await stack.submit_ok(doc)
        async with asyncio.timeout(60):
            while json.loads(await conn.recv())["job_id"] != job_id:
                pass


async def test_services_pass_the_key_in_a_header(stack: StackClient, tmp_path: Path) -> None:
    doc = tmp_path / "header.txt"
    doc.write_text("Followed with the key in a header.\n")
    job_id = await stack.submit_ok(doc)
    url = f"{stack.ws}/v1/jobs/{job_id}/events"
    async with (
        asyncio.timeout(120),
        websockets.connect(url, additional_headers=stack.headers()) as conn,
    ):
        async for raw in conn:
            if json.loads(raw)["status"] in TERMINAL_STATUSES:
                break
    assert await _close_of(url) == (4401, "A valid API key or ticket is required.")


@pytest.fixture(scope="module")
async def production_progress(
    test_settings: Settings, db_pool: object, rabbit_available: None
) -> AsyncIterator[tuple[Stack, Settings]]:
    """The progress service alone, outside dev, with keys of its own."""
    settings = test_settings.model_copy(
        update={"env": "production", "api_keys": "prod-tenant-key=prod", "admin_keys": "prod-admin"}
    )
    env = {**stack_env(settings), **stack_ports(), "DOCPIPE_ENV": "production"}
    log_dir = ARTIFACTS / "logs" / f"{test_settings.bus_prefix}_production"
    running = Stack(env, services=("progress",), log_dir=log_dir)
    await running.start()
    try:
        await running.wait_ready(90)
        yield running, settings
    finally:
        await running.stop()


async def test_a_key_in_the_url_is_refused_outside_dev(
    production_progress: tuple[Stack, Settings],
) -> None:
    running, _ = production_progress
    ws = running.url("progress").replace("http://", "ws://")
    job = uuid.uuid4()
    for key in ("prod-tenant-key", "prod-admin"):
        assert await _close_of(f"{ws}/v1/jobs/{job}/events?token={key}") == (4401, TOKEN_REFUSED)
    assert await _close_of(f"{ws}/v1/admin/events?token=prod-admin") == (4401, TOKEN_REFUSED)
    # The same key in a header is accepted (the job is unknown: 4404, past authentication).
    header = {"Authorization": "Bearer prod-tenant-key"}
    code, _ = await _close_of(f"{ws}/v1/jobs/{job}/events", additional_headers=header)
    assert code == 4404
    async with httpx.AsyncClient(timeout=30) as client:
        ticket = await client.post(
            f"{running.url('progress')}/v1/admin/ws-ticket",
            headers={"Authorization": "Bearer prod-admin"},
        )
    assert ticket.status_code == 200
    ISSUED.append(ticket.json()["ticket"])
    async with websockets.connect(ws + ticket.json()["events"]) as conn:
        with pytest.raises(TimeoutError):  # open, and quiet: no job runs here
            await asyncio.wait_for(conn.recv(), 1)


async def test_no_key_or_ticket_in_any_log(
    stack: StackClient, test_settings: Settings, production_progress: tuple[Stack, Settings]
) -> None:
    """Runs after the tests above (file order): their tickets and keys are in no log line."""
    assert ISSUED, "run with the tests above"
    _, production = production_progress
    secrets = [
        *ISSUED,
        *test_settings.tenants_by_key,
        *test_settings.admin_key_set,
        *production.tenants_by_key,
        *production.admin_key_set,
    ]
    dirs = [stack.stack.log_dir, ARTIFACTS / "logs" / f"{test_settings.bus_prefix}_production"]
    logs = {
        f"{path.parent.name}/{path.name}": path.read_text(errors="replace")
        for folder in dirs
        if folder is not None
        for path in folder.glob("*.log")
    }
    assert any("ticket=[REDACTED]" in text for text in logs.values())
    assert any("token=[REDACTED]" in text for text in logs.values())
    leaks = {(name, s[:12]) for name, text in logs.items() for s in secrets if s in text}
    assert leaks == set()
