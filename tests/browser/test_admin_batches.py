"""The admin page's batch list in headless Chromium against the running stack: a batch whose
jobs run appears with its aggregate bars and moves to completed; the list needs an admin
key."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient, publish_as_upstream
from tests.integration.test_batch_progress import new_batch

pytestmark = [pytest.mark.browser, pytest.mark.integration]


async def test_admin_batch_list_needs_an_admin_key(stack: StackClient) -> None:
    async with httpx.AsyncClient(base_url=stack.stack.url("progress"), timeout=30) as client:
        assert (await client.get("/v1/admin/batches")).status_code == 401
        tenant = await client.get("/v1/admin/batches", headers=stack.headers(stack.key))
        assert tenant.status_code == 403
        admin = await client.get("/v1/admin/batches", headers=stack.headers(stack.admin_key))
        assert admin.status_code == 200 and isinstance(admin.json()["items"], list)
        bad = await client.get(
            "/v1/admin/batches",
            params={"status": "nonsense"},
            headers=stack.headers(stack.admin_key),
        )
        assert bad.status_code == 422


async def test_admin_page_lists_batches_with_their_bars(
    stack: StackClient,
    browser: Any,
    db_pool: asyncpg.Pool,
    test_settings: Settings,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    page = await browser.new_page(viewport={"width": 1600, "height": 1000})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.admin_key}")

    tenant = test_settings.tenants_by_key[stack.key]
    batch_id = await new_batch(db_pool, tenant=tenant, name="admin page batch")
    uploads = []
    for i in range(3):
        doc = pdf_with_pages(tmp_path / f"b{i}.pdf", [f"Batch document {i}.", "Second page."])
        uploads.append(
            DocumentUploaded(
                job_id=uuid.uuid4(),
                tenant=tenant,
                document_uri=doc.resolve().as_uri(),
                filename=doc.name,
                batch_id=batch_id,
            )
        )
    await asyncio.gather(*(publish_as_upstream(test_settings, u) for u in uploads))

    row = page.locator(f'#batches-body tr[data-batch-id="{batch_id}"]')
    await expect(row).to_be_visible(timeout=30_000)
    await expect(row.locator("td.name")).to_have_text("admin page batch")
    await expect(row.locator("td.tenant")).to_have_text(tenant)
    await expect(row.locator("td.status")).to_have_text("completed", timeout=120_000)
    await expect(row.locator(".overall .pct")).to_have_text("100%")
    await expect(row.locator("td.jobs")).to_have_text("3/3")
    await expect(row.locator("td.pages")).to_have_text("6/6")
    done = row.locator('.batch-split .seg[data-part="completed"]')
    await expect(done).to_have_attribute("data-count", "3")
    assert await done.evaluate("e => e.style.width") == "100%"

    # The status filter hides it when it does not match, and shows it again.
    await page.select_option("#batch-status-filter", "failed")
    await expect(row).to_have_count(0, timeout=10_000)
    await page.select_option("#batch-status-filter", "completed")
    await expect(row).to_be_visible(timeout=10_000)
    assert not problems, problems
    await page.close()
