"""No key, token or password reaches a log line: structlog's own lines, the standard library's,
and uvicorn's (which writes a WebSocket's path with its query string)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket

from shared.logging import REDACTED, configure_logging, redact_secrets, redact_text

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The service's logging, writing to a buffer as stdout; the previous setup restored."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {n: logging.getLogger(n).level for n in ("uvicorn.access", "uvicorn.error")}
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    configure_logging("test", "INFO", json_output=True)
    yield out
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in levels.items():
        logging.getLogger(name).setLevel(lvl)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "text",
    [
        f'127.0.0.1:5123 - "WebSocket /v1/jobs/1/ws?token={SECRET}&after=3" [accepted]',
        f"GET /v1/jobs?api_key={SECRET} HTTP/1.1",
        f"https://api.example/x?a=1&key={SECRET}#top",
        f"https://host/ws?ticket={SECRET}",
        f"Authorization: Bearer {SECRET}",
        f"authorization: Basic {SECRET}",
        f"X-API-Key: {SECRET}",
        f"{{'x-api-key': '{SECRET}'}}",
        f"[(b'authorization', b'Bearer {SECRET}')]",
        f"?password={SECRET}",
    ],
)
def test_secrets_in_text_are_redacted(text: str) -> None:
    redacted = redact_text(text)
    assert SECRET not in redacted
    assert REDACTED in redacted


def test_other_text_is_left_alone() -> None:
    for text in (
        "GET /v1/jobs?after=2026-01-01&status=failed HTTP/1.1",
        "routing_key=document.uploaded dedupe_key=abc",
        "The Word document is damaged: unexpected end of data.",
    ):
        assert redact_text(text) == text


def test_secret_fields_and_nested_headers_are_redacted() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "request",
            "api_key": SECRET,
            "password": SECRET,
            "headers": {"Authorization": f"Bearer {SECRET}", "accept": "text/plain"},
            "url": f"http://x/y?token={SECRET}",
            "urls": [f"http://x/y?token={SECRET}"],
            "routing_key": "document.uploaded",
            "job_id": "4b1c",
        },
    )
    assert SECRET not in json.dumps(event)
    assert event["headers"]["accept"] == "text/plain"
    assert event["routing_key"] == "document.uploaded" and event["job_id"] == "4b1c"


def test_structlog_and_stdlib_lines_carry_no_secret(
    json_logs: io.StringIO,
) -> None:
    log = structlog.get_logger("t")
    log.info("fetching", url=f"https://docs.example/a.pdf?token={SECRET}", api_key=SECRET)
    logging.getLogger("some.library").warning("calling %s", f"http://h/?api_key={SECRET}")
    try:
        raise RuntimeError(f"refused: authorization: Bearer {SECRET}")
    except RuntimeError:
        log.exception("failed")
    found = lines(json_logs)
    assert len(found) == 3
    assert SECRET not in json.dumps(found)
    assert found[0]["url"] == f"https://docs.example/a.pdf?token={REDACTED}"
    assert REDACTED in found[1]["event"] and REDACTED in found[2]["exception"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_uvicorn_lines_carry_no_key_even_with_the_access_log_on(
    json_logs: io.StringIO,
) -> None:
    """uvicorn writes `"WebSocket /path?token=..." [accepted]` at INFO (access log or not),
    and the access log writes the query string of every request."""
    app = FastAPI()

    @app.get("/v1/jobs")
    async def jobs() -> dict[str, str]:
        return {"ok": "yes"}

    @app.websocket("/v1/jobs/{job_id}/ws")
    async def follow(websocket: WebSocket, job_id: str) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.close()

    port = free_port()
    logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    config = uvicorn.Config(app, port=port, log_config=None, access_log=True, lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{port}/v1/jobs?api_key={SECRET}&after=1")
            assert r.status_code == 200
        async with websockets.connect(f"ws://127.0.0.1:{port}/v1/jobs/7/ws?token={SECRET}") as ws:
            assert await ws.recv() == "hello"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
    found = lines(json_logs)
    text = json.dumps(found)
    assert SECRET not in text
    assert any("WebSocket /v1/jobs/7/ws?token=[REDACTED]" in line["event"] for line in found)
    assert any("/v1/jobs?api_key=[REDACTED]&after=1" in line["event"] for line in found)
