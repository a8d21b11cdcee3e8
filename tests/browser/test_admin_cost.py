"""The admin page's AI cost in a real browser against the running stack: the job list's cost
column and the usage view (by tenant, day and model) show what the call ledger holds,
including a call whose answer was lost (still reserved, at its worst case)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.settings import Settings
from tests.fixtures import pdf_with_pages
from tests.integration.conftest import ARTIFACTS
from tests.integration.stack_client import StackClient

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SCREENSHOT = ARTIFACTS / "admin-page-cost.png"


async def spend(
    pool: asyncpg.Pool, job_id: str, tenant: str, model: str, outcome: str, cost: float
) -> None:
    """One ledger row as the analyzer's engine writes it."""
    settled = outcome != "reserved"
    await pool.execute(
        "INSERT INTO llm_calls (call_id, job_id, tenant, task, chunk_id, attempt, model,"
        " prompt_version, outcome, input_tokens, output_tokens, cost_usd, reserved_usd,"
        " created_at) VALUES ($1, $2, $3, 'summary', $4, 1, $5, 'v1', $6, $7, $8, $9, $9, $10)",
        uuid.uuid4(),
        uuid.UUID(job_id),
        tenant,
        uuid.uuid4(),
        model,
        outcome,
        1000 if settled else 0,
        100 if settled else 0,
        cost,
        datetime.now(UTC),
    )


async def test_the_admin_page_shows_cost_per_job_and_usage(
    stack: StackClient,
    browser: Any,
    db_pool: asyncpg.Pool,
    test_settings: Settings,
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    problems: list[str] = []
    page = await browser.new_page(viewport={"width": 1600, "height": 1200})
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tenant = test_settings.tenants_by_key[stack.key]
    job_id = await stack.submit_ok(pdf_with_pages(tmp_path / "priced.pdf", ["Priced words."]))
    assert (await stack.wait(job_id))["status"] == "completed"

    await page.goto(f"{stack.stack.url('progress')}/admin?key={stack.admin_key}")
    row = page.locator(f'#jobs-body tr[data-job-id="{job_id}"]')
    await expect(row.locator("td.status")).to_have_text("completed", timeout=30_000)
    await expect(row.locator("td.cost")).to_have_text("–")  # no model call yet

    model = f"browser-{uuid.uuid4().hex[:8]}"
    await spend(db_pool, job_id, tenant, model, "ok", 0.0123)
    await spend(db_pool, job_id, tenant, model, "reserved", 0.001)  # its answer was lost

    # The page refreshes every few seconds: the ledger's figures arrive.
    await expect(row.locator("td.cost")).to_have_text("$0.0133", timeout=20_000)
    await expect(row.locator("td.cost")).to_have_attribute("title", "1,100 tokens")

    line = page.locator(f'#usage-body tr[data-model="{model}"]')
    await expect(line).to_have_count(1, timeout=20_000)
    await expect(line.locator("td.tenant")).to_have_text(tenant)
    await expect(line.locator("td.day")).to_have_text(datetime.now(UTC).date().isoformat())
    await expect(line.locator("td.calls")).to_have_text("2")
    await expect(line.locator("td.tokens-in")).to_have_text("1,000")
    await expect(line.locator("td.cost")).to_have_text("$0.0133")
    total = await page.locator("#usage-total").text_content()
    assert total and total.startswith("$") and "tokens" in total

    # Today only (UTC) still holds the line; the screenshot shows both views.
    await page.select_option("#usage-days", "1")
    await expect(line).to_have_count(1, timeout=10_000)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")
    assert not problems, problems
    await page.close()


async def test_a_tenant_key_sees_only_its_own_usage(
    stack: StackClient, db_pool: asyncpg.Pool, test_settings: Settings
) -> None:
    import httpx

    other_tenant = test_settings.tenants_by_key[stack.other_key]
    model = f"other-{uuid.uuid4().hex[:8]}"
    await spend(db_pool, str(uuid.uuid4()), other_tenant, model, "ok", 0.5)
    async with httpx.AsyncClient(base_url=stack.stack.url("progress"), timeout=30) as client:
        mine = (await client.get("/v1/usage", headers=stack.headers(stack.key))).json()
        everyone = (await client.get("/v1/usage", headers=stack.headers(stack.admin_key))).json()
    assert all(line["model"] != model for line in mine["lines"])
    assert set(mine["by_tenant"]) <= {test_settings.tenants_by_key[stack.key]}
    assert any(line["model"] == model for line in everyone["lines"])
