"""The admin page's webhook panel in a real browser against the running stack: a job's
deliveries show with every attempt, and Redeliver sends one again: the stack's sender records
the new attempt (the session stack runs with DOCPIPE_ENV=dev, so the tenant has its dev signing
secret and the attempt is made; the SSRF guard refuses the loopback callback URL, so the delivery
is given up, and the page says why)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def delivered_twice(pool: asyncpg.Pool, job_id: str) -> uuid.UUID:
    """A delivery as the sender leaves one that got 500, then 200."""
    delivery_id = uuid.uuid4()
    now = datetime.now(UTC)
    await pool.execute(
        "INSERT INTO webhook_deliveries (delivery_id, dedupe_key, tenant, job_id, event_type, "
        "url, data, status, attempts, failures, delivered_at) VALUES ($1, $2, 'dev', $3, "
        "'job.completed', 'http://127.0.0.1:9/hooks', $4, 'delivered', 2, 1, now())",
        delivery_id,
        f"test:{delivery_id}",
        uuid.UUID(job_id),
        {"job_id": job_id, "status": "completed", "error": None},
    )
    await pool.executemany(
        "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, "
        "latency_ms, error) VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (delivery_id, 1, now, 500, 12.0, "The receiver answered 500."),
            (delivery_id, 2, now, 200, 8.0, None),
        ],
    )
    return delivery_id


async def test_admin_page_shows_a_jobs_webhooks_and_redelivers(
    stack: StackClient, db_pool: asyncpg.Pool, browser: Any, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    job_id = await stack.submit_ok(pdf_with_pages(tmp_path / "hook.pdf", ["Webhook page"]))
    assert (await stack.wait(job_id))["status"] == "completed"
    delivery_id = await delivered_twice(db_pool, job_id)

    problems: list[str] = []
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.admin_key}")
    await page.fill("#webhooks-job", job_id)
    await page.click("#webhooks-form button[type=submit]")
    row = page.locator(f'#webhooks-body tr[data-delivery-id="{delivery_id}"]')
    await expect(row.locator("td.event")).to_have_text("job.completed", timeout=10_000)
    await expect(row.locator("td.status")).to_have_text("delivered")
    await expect(row.locator("td.attempts")).to_have_text("2")
    await expect(row.locator("td.history")).to_contain_text("#1 500 12 ms – The receiver")
    await expect(row.locator("td.history")).to_contain_text("#2 200 8 ms")

    await row.locator("button.redeliver").click()
    await expect(page.locator("#webhooks-note")).to_have_text("Redelivery queued.")
    # The stack's sender makes the third attempt moments later; Show again until it is there.
    for _ in range(100):
        await page.click("#webhooks-form button[type=submit]")
        if await row.locator("td.attempts").text_content() == "3":
            break
        await page.wait_for_timeout(100)
    await expect(row.locator("td.attempts")).to_have_text("3")
    await expect(row.locator("td.status")).to_have_text("failed")
    await expect(row.locator("td.history")).to_contain_text("#3")
    await expect(row.locator("td.history")).to_contain_text(
        "The address 127.0.0.1 points to a private or local network"
    )

    await page.fill("#webhooks-job", str(uuid.uuid4()))
    await page.click("#webhooks-form button[type=submit]")
    await expect(page.locator("#webhooks-empty")).to_have_text("No such job.")
    assert problems == []
