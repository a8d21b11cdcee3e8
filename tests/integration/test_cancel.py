"""Cancel that cancels, within 2 seconds: while OCR runs on a 12-page scan, a cancel shows in
GET at once (progress applies the job.cancelled ingest publishes), ends the WebSocket with a
final "cancelled" message, kills the job's tesseract processes, drops its queued work and keeps
what was done as a partial result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
import websockets

from shared.settings import Settings
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.conftest import ARTIFACTS
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration

PAGES = 12
CANCEL_BUDGET_SECONDS = 2.0


def engine_children(parent: int) -> list[psutil.Process]:
    """The OCR service's tesseract children (services/ocr/engine.py), idle or at work."""
    found = []
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.Error):
            if "services.ocr.engine" in child.cmdline():
                found.append(child)
    return found


async def working_engines(parent: int, interval: float = 0.2) -> set[int]:
    """Pids of the tesseract children that used CPU over `interval`: those with an image.
    An idle child waits on its stdin and uses none."""
    before: dict[int, tuple[psutil.Process, float]] = {}
    for child in engine_children(parent):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            before[child.pid] = (child, times.user + times.system)
    await asyncio.sleep(interval)
    busy = set()
    for pid, (child, used) in before.items():
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            if times.user + times.system - used > 0.02:
                busy.add(pid)
    return busy


def scanned_pdf(path: Path) -> Path:
    pages = [
        text_image([f"Scanned page {n} of the archive", "with several lines of text", "to OCR."])
        for n in range(1, PAGES + 1)
    ]
    return pdf_with_pages(path, pages)


async def ocred_pages(pool: asyncpg.Pool, job_id: str) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM job_pages WHERE job_id = $1 AND ocred_at IS NOT NULL", job_id
    )


async def test_cancel_while_ocr_runs(
    stack: StackClient, db_pool: asyncpg.Pool, test_settings: Settings, tmp_path: Path
) -> None:
    ocr_proc = stack.stack.services["ocr"].proc
    assert ocr_proc is not None
    job_id = await stack.submit_ok(scanned_pdf(tmp_path / "archive.pdf"))

    # A WebSocket client follows the job from the start; each message is timestamped.
    messages: list[tuple[float, dict[str, Any]]] = []

    async def follow() -> None:
        url = f"{stack.ws}/v1/jobs/{job_id}/events?token={stack.key}"
        async with websockets.connect(url) as conn:
            async for raw in conn:
                msg = json.loads(raw)
                messages.append((time.monotonic(), msg))
                if msg.get("final"):
                    return

    follower = asyncio.create_task(follow())

    # Cancel while OCR is running: a page is done and tesseract is at work on others.
    async with asyncio.timeout(120):
        while not (await ocred_pages(db_pool, job_id) >= 1 and await working_engines(ocr_proc.pid)):
            pass
    assert not follower.done()

    requested = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{stack.api}/v1/jobs/{job_id}/cancel", headers=stack.headers()
        )
    assert response.status_code == 202, response.text

    # GET shows cancelled within the budget: ingest records the request and publishes
    # job.cancelled, and the progress service (the only writer of job status) applies it.
    while (await stack.job(job_id)).json()["status"] != "cancelled":
        assert time.monotonic() - requested < CANCEL_BUDGET_SECONDS
        await asyncio.sleep(0.05)
    get_seconds = time.monotonic() - requested

    # No tesseract keeps running for the job: no child of the OCR service is at work any more
    # (the log check below shows the sandbox killed the ones that were).
    while await working_engines(ocr_proc.pid, interval=0.1):
        assert time.monotonic() - requested < CANCEL_BUDGET_SECONDS, "tesseract still running"
    killed_seconds = time.monotonic() - requested

    # The WebSocket ends with a final "cancelled" message within the budget.
    await asyncio.wait_for(follower, CANCEL_BUDGET_SECONDS)
    at, last = messages[-1]
    assert last["status"] == "cancelled" and last["final"] is True
    ws_seconds = at - requested
    assert ws_seconds < CANCEL_BUDGET_SECONDS

    # Queued work for the job is dropped, not processed: no page is OCRed after the cancel.
    done_at_cancel = await ocred_pages(db_pool, job_id)
    await asyncio.sleep(3)
    assert await ocred_pages(db_pool, job_id) == done_at_cancel
    assert done_at_cancel < PAGES

    # What was done is kept, marked partial.
    result = await stack.result(job_id)
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["partial"] is True and body["status"] == "cancelled"
    assert len(body["pages"]) >= 1
    assert any("Scanned page" in p["text"] for p in body["pages"]), body["pages"]

    # The sandbox's kill path did it: the OCR service logged the kill for this job, and
    # dropped the job's queued pages.
    log = (ARTIFACTS / "logs" / test_settings.bus_prefix / "ocr.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if job_id in line and line[:1] == "{"]
    killed = [e for e in lines if e.get("event") == "killed running work of a cancelled job"]
    assert killed and killed[0]["processes"] >= 1, lines[-5:]
    assert any(e.get("event") == "dropped work for an ended job" for e in lines)
    assert not stack.stack.deaths(), stack.stack.deaths()
    print(
        f"cancel: GET {get_seconds:.3f} s, tesseract gone {killed_seconds:.3f} s, "
        f"WebSocket final {ws_seconds:.3f} s, pages OCRed before the cancel {done_at_cancel}"
    )
