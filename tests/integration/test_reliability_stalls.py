"""Nothing stuck: a job whose OCR worker freezes is shown stalled, then fails at its deadline.

A stack of its own runs with a 3-second stall threshold, a 12-second deadline and a fast
sweep. The OCR service is frozen (SIGSTOP) once the job's pages are all extracted and waiting
for OCR, and thawed (SIGCONT) at the end: its late work for the failed job is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import websockets

from scripts.stack import Stack
from services.progress.transitions import deadline_reason
from shared.db import drop_database
from shared.settings import Settings
from tests.conftest import delete_bus
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.conftest import ARTIFACTS, stack_env
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration

STALL_SECONDS = 3
DEADLINE_SECONDS = 12


async def job_view(client: StackClient, job_id: str) -> dict[str, Any]:
    """GET /v1/jobs/{id}; {} for an answer that is not the job (a broker or database restart
    by the crash tests can make one request fail)."""
    response = await client.job(job_id)
    return response.json() if response.status_code == 200 else {}


@dataclass
class ImpatientStack:
    client: StackClient
    pool: asyncpg.Pool  # on the stack's own database


@pytest.fixture(scope="module")
async def impatient_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[ImpatientStack]:
    """A stack on a database of its own: its stall and deadline sweep looks at every active
    job of its database, and on the session's it would mark stalled, then fail after 12 s,
    the jobs of every other test running at the same time (and spend its rounds on them)."""
    base, dbname = test_settings.database_url.rsplit("/", 1)
    settings = test_settings.model_copy(
        update={
            "bus_prefix": f"{test_settings.bus_prefix}_st",
            "database_url": f"{base}/{dbname}_st",
        }
    )
    env = {
        **stack_env(settings),
        "DOCPIPE_STALL_SECONDS": str(STALL_SECONDS),
        "DOCPIPE_JOB_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
        "DOCPIPE_STALL_CHECK_SECONDS": "0.5",
    }
    running = Stack(env, log_dir=ARTIFACTS / "logs" / settings.bus_prefix)
    await running.start()
    try:
        await running.wait_ready(90)
        key, other = list(settings.tenants_by_key)[:2]
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
        try:
            yield ImpatientStack(
                StackClient(running, key=key, other_key=other, admin_key="admin-key"), pool
            )
        finally:
            await pool.close()
    finally:
        running.signal("ocr", signal.SIGCONT)
        await running.stop()
        await delete_bus(settings)
        with contextlib.suppress(Exception):
            await drop_database(settings.database_url)


async def test_frozen_ocr_stalls_the_job_then_the_deadline_fails_it(
    impatient_stack: ImpatientStack, tmp_path: Path
) -> None:
    client, db_pool = impatient_stack.client, impatient_stack.pool
    scans = [text_image([f"Frozen page {n}", "waiting for OCR"]) for n in (1, 2, 3)]
    job_id = await client.submit_ok(pdf_with_pages(tmp_path / "frozen.pdf", scans))
    messages: list[dict[str, Any]] = []

    async def follow() -> None:
        url = f"{client.ws}/v1/jobs/{job_id}/events?token={client.key}"
        async with websockets.connect(url) as conn:
            async for raw in conn:
                messages.append(json.loads(raw))
                if messages[-1].get("final"):
                    return

    follower = asyncio.create_task(follow())
    # Freeze OCR as soon as every page is extracted (nothing else will move the job).
    async with asyncio.timeout(60):
        while True:
            row = await db_pool.fetchrow(
                "SELECT pages_total, (SELECT count(*) FROM job_pages p WHERE p.job_id = j.job_id "
                "AND p.extracted_at IS NOT NULL) AS extracted FROM jobs j WHERE job_id = $1",
                job_id,
            )
            if row and row["pages_total"] and row["extracted"] == row["pages_total"]:
                break
            await asyncio.sleep(0.05)
    client.stack.signal("ocr", signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        # Stalled: shown by GET and pushed on the WebSocket, while the job is still running
        # (before the deadline fails it: the wait ends on either, not on a clock).
        async with asyncio.timeout(DEADLINE_SECONDS + 30):
            while True:
                view = await job_view(client, job_id)
                if view.get("stalled") or view.get("status") in ("completed", "failed"):
                    break
                await asyncio.sleep(0.2)
        assert view["status"] == "processing" and view["stalled"], view
        stalled_after = time.monotonic() - frozen_at
        async with asyncio.timeout(DEADLINE_SECONDS + 30):
            while not any(m.get("stalled") or m.get("final") for m in messages):
                await asyncio.sleep(0.1)
        stalled_msgs = [m for m in messages if m.get("stalled")]
        assert stalled_msgs, messages
        assert stalled_msgs[0]["status"] == "processing" and not stalled_msgs[0]["final"]

        # Then the deadline fails it, with a reason saying so.
        final = await client.wait(job_id, timeout=DEADLINE_SECONDS + 10)
        assert final["status"] == "failed", final
        assert final["error"] == deadline_reason(DEADLINE_SECONDS)
        await asyncio.wait_for(follower, 30)
        assert messages[-1]["status"] == "failed" and messages[-1]["final"]
        assert messages[-1]["error"] == deadline_reason(DEADLINE_SECONDS)
    finally:
        client.stack.signal("ocr", signal.SIGCONT)
        follower.cancel()

    # Thawed, the OCR service finishes or drops its work; the failed job takes no changes.
    await asyncio.sleep(3)
    after = await job_view(client, job_id)
    assert after["status"] == "failed" and after["error"] == final["error"]
    assert not client.stack.deaths(), client.stack.deaths()
    print(f"stall: shown {stalled_after:.1f} s after the freeze (threshold {STALL_SECONDS} s)")
