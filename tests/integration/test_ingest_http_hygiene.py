"""Uploads that never finish: ingest behind uvicorn on a real socket, with clients that send
the headers and part of the body, then nothing. A stalled body is answered 408 and its
connection closed after the read timeout; a tenant's uploads beyond the cap are answered 429
with Retry-After, and the cap frees once the stalled ones end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from scripts.stack import free_port
from services.ingest.app import create_app
from services.ingest.limits import UploadSlots
from shared.settings import Settings
from tests.conftest import delete_bus

pytestmark = pytest.mark.integration

READ_TIMEOUT = 1.0
CAP = 2
BOUNDARY = "hygiene-boundary"


@dataclass
class Served:
    app: FastAPI
    url: str
    port: int

    @property
    def slots(self) -> UploadSlots:
        slots: UploadSlots = self.app.state.upload_slots
        return slots


@pytest.fixture(scope="module")
async def served(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[Served]:
    settings = test_settings.model_copy(
        update={
            "bus_prefix": f"{test_settings.bus_prefix}_hygiene",
            "upload_read_timeout_seconds": READ_TIMEOUT,
            "max_concurrent_uploads_per_tenant": CAP,
        }
    )
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    yield Served(app, f"http://127.0.0.1:{port}", port)
    server.should_exit = True
    await task
    await delete_bus(settings)


async def stalled_upload(
    port: int, key: str = "dev-key"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A client that announces 100 kB, sends the headers and the start of the file, then
    nothing more (and keeps the connection open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    part = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="slow.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
        "The first words of a document that never ends"
    ).encode()
    head = (
        "POST /v1/jobs HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {key}\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).encode()
    writer.write(head + part)
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def post_text(url: str, key: str, text: bytes) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{url}/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": ("notes.txt", text, "text/plain")},
        )


async def test_a_stalled_body_is_answered_408_and_its_connection_closed(served: Served) -> None:
    started = time.monotonic()
    reader, writer = await stalled_upload(served.port)
    try:
        # Whole answer, then EOF: the server closed the connection (no keep-alive).
        answer = await read_answer(reader, READ_TIMEOUT + 10)
    finally:
        writer.close()
    waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in answer.lower()
    assert b"sent nothing for 1 seconds" in answer
    assert READ_TIMEOUT <= waited < READ_TIMEOUT + 10
    await until(lambda: served.slots.in_use("dev") == 0)


async def test_uploads_beyond_the_tenant_cap_are_429_until_slots_free(served: Served) -> None:
    stalled = [await stalled_upload(served.port) for _ in range(CAP)]
    try:
        await until(lambda: served.slots.in_use("dev") == CAP)
        refused = await post_text(served.url, "dev-key", b"one upload too many\n")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "uploads in progress" in refused.json()["detail"]
        # Another tenant is not held up by this one.
        other = await post_text(served.url, "dev-key-2", b"another tenant's upload\n")
        assert other.status_code == 202, other.text
        # The stalled uploads end with 408 after the read timeout, and free their slots.
        for reader, _ in stalled:
            assert (await read_answer(reader, READ_TIMEOUT + 10)).startswith(b"HTTP/1.1 408 ")
    finally:
        for _, writer in stalled:
            writer.close()
    await until(lambda: served.slots.in_use("dev") == 0)
    accepted = await post_text(served.url, "dev-key", b"now there is room\n")
    assert accepted.status_code == 202, accepted.text


async def test_a_client_that_hangs_up_frees_its_slot(served: Served) -> None:
    _, writer = await stalled_upload(served.port)
    await until(lambda: served.slots.in_use("dev") == 1)
    hung_up = time.monotonic()
    writer.close()
    await until(lambda: served.slots.in_use("dev") == 0, timeout=READ_TIMEOUT + 5)
    # Freed by the hang-up itself, not by the read timeout.
    assert time.monotonic() - hung_up < READ_TIMEOUT * 0.8
