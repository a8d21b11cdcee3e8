"""The admin page in a real browser against the running stack: a job submitted through the
ingest API appears on the page and moves to completed from the live stream, with its stage
bars full; totals, queue depths and dead letters render; only admin keys get the data."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.fixtures import pdf_with_pages, text_image
from tests.integration.conftest import ARTIFACTS
from tests.integration.stack_client import StackClient

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SCREENSHOT = ARTIFACTS / "admin-page.png"
JOB_TIMEOUT_MS = 180_000
NUMBER = re.compile(r"^\d+$")
POSITIVE = re.compile(r"^[1-9]\d*$")


def _scanned_pdf(path: Path) -> Path:
    """Text, a scan (OCR takes a moment), text: every stage has work."""
    return pdf_with_pages(
        path,
        [
            "Quarterly report for the admin page test.\nRevenue rose by 12 percent.",
            text_image(["A scanned page the OCR", "service has to read."]),
            "Closing remarks.\nContact ops@example.com for questions.",
        ],
    )


async def test_admin_data_needs_an_admin_key(stack: StackClient) -> None:
    base = stack.stack.url("progress")
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for path in ("/v1/admin/jobs", "/v1/admin/totals", "/v1/admin/queues"):
            assert (await client.get(path)).status_code == 401, path
            tenant = await client.get(path, headers=stack.headers(stack.key))
            assert tenant.status_code == 403, (path, tenant.text)
            admin = await client.get(path, headers=stack.headers(stack.admin_key))
            assert admin.status_code == 200, (path, admin.text)
        bad = await client.get(
            "/v1/admin/jobs", params={"status": "nonsense"}, headers=stack.headers(stack.admin_key)
        )
        assert bad.status_code == 422
        # The page itself is public: it holds no data and asks for a key.
        page = await client.get("/admin")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert "Content-Security-Policy" in page.headers

    ws = base.replace("http://", "ws://") + "/v1/admin/events"
    for url, code in ((ws, 4401), (f"{ws}?token={stack.key}", 4403)):
        async with connect(url) as conn:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(conn.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code, url


async def test_admin_stream_carries_every_job(stack: StackClient, tmp_path: Path) -> None:
    """The fleet-wide stream sends the updates of a job it was never told about."""
    ws = stack.ws + f"/v1/admin/events?token={stack.admin_key}"
    async with connect(ws) as conn:
        job_id = await stack.submit_ok(_scanned_pdf(tmp_path / "stream.pdf"))
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(JOB_TIMEOUT_MS / 1000):
            while True:
                update = json.loads(await conn.recv())
                if update["job_id"] != job_id:
                    continue
                seen.append(update)
                if update["final"]:
                    break
    assert seen[-1]["status"] == "completed", seen[-1]
    assert [u["seq"] for u in seen] == sorted({u["seq"] for u in seen})
    assert all(u["tenant"] for u in seen) and seen[-1]["filename"] == "stream.pdf"


async def test_admin_page_follows_a_job_live(
    stack: StackClient, browser: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

    def on_console(msg: Any) -> None:
        # HTTP error statuses are logged by the browser itself; the page handles them.
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            problems.append(f"console {msg.type}: {msg.text}")

    page.on("console", on_console)

    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.admin_key}")
    # The key leaves the address bar; the live stream connects before the job is submitted,
    # so every update of the job must reach the page.
    assert "key=" not in page.url
    await expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=15_000)

    job_id = await stack.submit_ok(_scanned_pdf(tmp_path / "admin-page.pdf"))
    row = page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')
    await expect(row).to_be_visible(timeout=30_000)
    await expect(row.locator("td.filename")).to_have_text("admin-page.pdf")
    await expect(row.locator("td.id")).to_have_text(job_id[:8])
    await expect(row.locator("td.status")).to_have_text("completed", timeout=JOB_TIMEOUT_MS)

    # The row was moved by the WebSocket stream, not only by the periodic list refresh.
    assert int(await row.get_attribute("data-live-updates") or 0) > 0
    await expect(row.locator(".overall .pct")).to_have_text("100%")
    await expect(row.locator("td.pages")).to_have_text("3/3")
    bars = row.locator(".stage-bar")
    assert await bars.count() == 3
    for stage in ("extract", "ocr", "analyze"):
        bar = row.locator(f'.stage-bar[data-stage="{stage}"]')
        assert int(await bar.get_attribute("data-total") or 0) > 0, f"{stage} had no work"
        await expect(bar).to_have_attribute("aria-valuenow", "100")

    # Totals and queue depths are numbers (totals refresh every few seconds).
    await page.wait_for_function(
        """() => {
            const shown = document.querySelectorAll('#jobs-body tr[data-status="completed"]');
            const total = document.getElementById("total-completed").textContent;
            return Number(total.replace(/,/g, "")) >= Math.max(1, shown.length);
        }""",
        timeout=15_000,
    )
    total = await page.locator("#total-all").text_content()
    assert total and int(total.replace(",", "")) >= 1
    for group in ("extractor", "ocr", "analyzer", "progress"):
        queue = page.locator(f'#queues-body tr[data-group="{group}"]')
        await expect(queue.locator("td.messages")).to_have_text(NUMBER, timeout=15_000)
        # Every service consumes its queue (the broker is read every few seconds, so a reading
        # from before a service attached may show 0 for a moment).
        await expect(queue.locator("td.consumers")).to_have_text(POSITIVE, timeout=20_000)
    throughput = await page.locator("#throughput").text_content()
    assert throughput and float(throughput) >= 0

    # Dead letters: a list or the empty state, never an error.
    dead = page.locator("#dead-letters-body tr, #dead-letters-empty:visible")
    await expect(dead.first).to_be_visible()
    empty = page.locator("#dead-letters-empty")
    if await empty.is_visible():
        await expect(empty).to_have_text("No dead letters.")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")

    # Search by job id prefix keeps that row; a status filter it does not match hides it.
    await page.fill("#search", job_id[:8])
    await expect(page.locator("#jobs-body tr")).to_have_count(1, timeout=10_000)
    await expect(row).to_be_visible()
    await page.select_option("#status-filter", "failed")
    await expect(row).to_have_count(0, timeout=10_000)
    await page.select_option("#status-filter", "completed")
    await expect(row).to_be_visible(timeout=10_000)

    assert not problems, problems
    await page.close()


async def test_admin_page_refuses_a_tenant_key(stack: StackClient, browser: Any) -> None:
    from playwright.async_api import expect

    page = await browser.new_page()
    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.key}")
    await expect(page.locator("#banner")).to_contain_text("not an admin key", timeout=15_000)
    await expect(page.locator("#jobs-body tr")).to_have_count(0)
    await expect(page.locator("#total-all")).to_have_text("–")
    await page.close()


async def _dead_letter_directly(stack: StackClient, error: str) -> None:
    """A message as the bus dead-letters it, put straight on the analyzer's dead-letter queue
    (the progress service records it)."""
    import aio_pika

    prefix = stack.stack.env["DOCPIPE_BUS_PREFIX"]
    conn = await aio_pika.connect(stack.stack.env["DOCPIPE_AMQP_URL"])
    try:
        channel = await conn.channel()
        body = json.dumps({"job_id": str(uuid.uuid4()), "type": "chunks.analyzed"}).encode()
        headers = {
            "x-event-type": "chunks.analyzed",
            "x-attempt": 3,
            "x-error": error,
            "x-dead-letter-reason": "retries-exhausted",
            "x-original-queue": f"{prefix}.analyzer",
        }
        message = aio_pika.Message(
            body,
            message_id=str(uuid.uuid4()),
            content_type="application/json",
            headers=headers,
        )
        await channel.default_exchange.publish(message, routing_key=f"{prefix}.analyzer.dlq")
    finally:
        await conn.close()


async def test_admin_page_purges_a_dead_letter(stack: StackClient, browser: Any) -> None:
    from playwright.async_api import expect

    error = f"RuntimeError: admin page purge test {uuid.uuid4().hex[:8]}"
    await _dead_letter_directly(stack, error)
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.admin_key}")
    row = page.locator("#dead-letters-body tr", has_text=error)
    await expect(row).to_have_count(1, timeout=20_000)  # recorded, then the next refresh
    await expect(row.locator("td.queue-name")).to_have_text("analyzer")
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await row.get_by_role("button", name="Purge").click()
    await expect(page.locator("#toast")).to_have_text("Purged.")
    await expect(row).to_have_count(0, timeout=10_000)
    async with httpx.AsyncClient(timeout=30) as client:
        listed = await client.get(
            f"{stack.stack.url('progress')}/v1/dead-letters",
            params={"queue": "analyzer"},
            headers=stack.headers(stack.admin_key),
        )
    assert listed.status_code == 200
    assert all(item["error"] != error for item in listed.json()["items"])
    await page.close()
