"""End to end over the real bus: events published on RabbitMQ, progress read over WebSocket."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from scripts.stack import free_port
from services.progress.app import create_app
from shared.bus import Bus
from shared.settings import Settings
from tests.conftest import delete_bus
from tests.integration.test_progress_window import three_page_job

pytestmark = pytest.mark.integration


@pytest.fixture
async def progress_service(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[str, Settings]]:
    """The progress app on a free port in this event loop, on a private bus topology (so a
    full stack running in the same session never competes for its queue)."""
    settings = test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_pg"})
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(30):
            while not server.started:
                assert not task.done(), "progress server failed to start"
                await asyncio.sleep(0.05)
        yield f"127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        await delete_bus(settings)


async def _watch(url: str) -> list[dict[str, Any]]:
    messages = []
    async with asyncio.timeout(60), connect(url) as ws:
        async for raw in ws:
            messages.append(json.loads(raw))
        assert ws.close_code == 1000
    return messages


async def _close_code(url: str) -> int | None:
    async with asyncio.timeout(10), connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_progress_over_websocket(progress_service: tuple[str, Settings]):
    host, settings = progress_service
    key, other_key = list(settings.tenants_by_key)[:2]
    job_id = uuid.uuid4()
    events = three_page_job(job_id, tenant=settings.tenants_by_key[key], start=datetime.now(UTC))
    bus = Bus(settings, "test")
    await bus.start()
    try:
        await bus.publish(events[0])
        async with httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http:
            async with asyncio.timeout(30):
                while True:
                    resp = await http.get(
                        f"/v1/jobs/{job_id}/progress", headers={"Authorization": f"Bearer {key}"}
                    )
                    if resp.status_code == 200:
                        break
                    assert resp.status_code == 404
                    await asyncio.sleep(0.1)
            assert resp.json()["status"] == "queued"

            ws_url = f"ws://{host}/v1/jobs/{job_id}/events?token={key}"
            watcher = asyncio.create_task(_watch(ws_url))
            await asyncio.sleep(0.3)  # connected and sent its first snapshot
            for event in events[1:]:
                await bus.publish(event)
            messages = await watcher

            seqs = [m["seq"] for m in messages]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
            percents = [m["percent"] for m in messages]
            assert percents == sorted(percents), percents
            final = messages[-1]
            assert final["status"] == "completed" and final["percent"] == 100 and final["final"]
            assert all(m["percent"] < 100 for m in messages[:-1])
            assert final["stages"]["analyze"] == {"total": 4, "done": 4, "failed": 0}

            # Reconnecting with ?after= replays exactly the later updates.
            middle = seqs[len(seqs) // 2]
            replay = await _watch(f"{ws_url}&after={middle}")
            assert replay == [m for m in messages if m["seq"] > middle]
            # Already seen the end: closes at once.
            assert await _watch(f"{ws_url}&after={final['seq']}") == []

            resp = await http.get(
                f"/v1/jobs/{job_id}/progress", headers={"Authorization": f"Bearer {key}"}
            )
            assert resp.status_code == 200 and resp.json() == final
            other = await http.get(
                f"/v1/jobs/{job_id}/progress", headers={"Authorization": f"Bearer {other_key}"}
            )
            assert other.status_code == 404
            assert (await http.get(f"/v1/jobs/{job_id}/progress")).status_code == 401

        base = f"ws://{host}/v1/jobs/{job_id}/events"
        assert await _close_code(f"{base}?token={other_key}") == 4404
        assert await _close_code(base) == 4401
        assert await _close_code(f"{base}?token=not-a-key") == 4401
        assert await _close_code(f"ws://{host}/v1/jobs/{uuid.uuid4()}/events?token={key}") == 4404
        admin = sorted(settings.admin_key_set)[0]
        assert (await _watch(f"{base}?token={admin}"))[-1] == final
    finally:
        await bus.stop()


async def _close(url: str) -> tuple[int, str]:
    async with asyncio.timeout(10), connect(url) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_a_bad_after_is_refused_with_a_close_code(
    progress_service: tuple[str, Settings], db_pool: asyncpg.Pool
):
    """?after= beyond int64, negative or not a number: accepted, then closed with 4400 and a
    sentence (not an HTTP 403 at the handshake, nor a database error)."""
    host, settings = progress_service
    key = next(iter(settings.tenants_by_key))
    job_id = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri) VALUES ($1, $2, 'blob://sha256/ab')",
        job_id,
        settings.tenants_by_key[key],
    )
    base = f"ws://{host}/v1/jobs/{job_id}/events?token={key}"
    for bad in (str(2**63), "99999999999999999999999", "-1", "abc", "1.5"):
        code, reason = await _close(f"{base}&after={bad}")
        assert code == 4400, bad
        assert "'after' must be" in reason, reason
    # The largest seq there can be is fine: nothing after it, the stream stays open.
    async with asyncio.timeout(10), connect(f"{base}&after={2**63 - 1}") as ws:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await ws.recv()
