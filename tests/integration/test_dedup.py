"""Duplicate documents against the real stack: a duplicate of a completed job completes at
once with its result (nothing reaches the extractor), force=true processes again, identical
submissions that arrive together are processed once, and followers of a cancelled source
fail with a sentence saying so."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from services.progress.deduplicated import settle_followers
from services.progress.lifecycle import sweep_stalls
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def result_of(stack: StackClient, job_id: str) -> dict[str, Any]:
    response = await stack.result(job_id)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def pages_recorded(pool: asyncpg.Pool, job_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM job_pages WHERE job_id = $1", uuid.UUID(job_id)
    )
    return count


def text_pdf(path: Path, label: str, pages: int = 3) -> bytes:
    texts = [f"{label}\nPage {n} of a document submitted twice." for n in range(1, pages + 1)]
    return pdf_with_pages(path, texts).read_bytes()


async def test_a_duplicate_reuses_the_completed_result_and_force_processes_again(
    stack: StackClient, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    data = text_pdf(tmp_path / "twice.pdf", f"dedup {uuid.uuid4()}")
    first = (await stack.post_job(data))["job_id"]
    assert (await stack.wait_ended(first))["status"] == "completed"
    source = await result_of(stack, first)

    created = await stack.post_job(data)
    assert created["deduplicated_from"] == first
    again = created["job_id"]
    view = await stack.wait_ended(again)
    assert view["status"] == "completed" and view["percent"] == 100
    assert view["deduplicated_from"] == first
    copy = await result_of(stack, again)
    assert copy["job_id"] == again and copy["deduplicated_from"] == first
    assert copy["cost"] == {"total_usd": 0}
    assert copy["text"] == source["text"] and copy["chunks"] == source["chunks"]
    assert copy["pages_total"] == source["pages_total"] == 3
    assert await pages_recorded(db_pool, again) == 0  # nothing was extracted for it
    final = (await stack.watch(again))[-1]
    assert final["final"] and final["status"] == "completed" and final["percent"] == 100

    # Other options, or another tenant, are other work.
    other_ocr = await stack.post_job(data, ocr="never")
    other_tenant = await stack.post_job(data, key=stack.other_key)
    forced = await stack.post_job(data, force="true")
    for created, key in ((other_ocr, None), (other_tenant, stack.other_key), (forced, None)):
        assert created["deduplicated_from"] is None
        assert (await stack.wait_ended(created["job_id"], key))["status"] == "completed"
    assert await pages_recorded(db_pool, forced["job_id"]) == 3


async def test_a_submission_with_a_password_is_never_deduplicated(
    stack: StackClient, corpus: Path
) -> None:
    """The password is not stored, so a wrong password must not reuse the result of the right
    one (that would hand the decrypted text to whoever sends any password)."""
    data = (corpus / "bad" / "pypdf-r4-aes-user-password.pdf").read_bytes()
    right = await stack.post_job(data, password="asdfzxcv", force="true")
    assert (await stack.wait_ended(right["job_id"]))["status"] == "completed"
    wrong = await stack.post_job(data, password="not-the-password")
    again = await stack.post_job(data, password="asdfzxcv")
    assert wrong["deduplicated_from"] is None and again["deduplicated_from"] is None
    assert (await stack.wait_ended(wrong["job_id"]))["status"] == "failed"
    assert (await stack.wait_ended(again["job_id"]))["status"] == "completed"


async def test_identical_submissions_arriving_together_are_processed_once(
    stack: StackClient, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    data = text_pdf(tmp_path / "together.pdf", f"together {uuid.uuid4()}", pages=6)
    created = await asyncio.gather(*(stack.post_job(data) for _ in range(4)))
    sources = [c for c in created if c["deduplicated_from"] is None]
    assert len(sources) == 1
    source = sources[0]["job_id"]
    assert all(c["deduplicated_from"] == source for c in created if c is not sources[0])
    views = [await stack.wait_ended(c["job_id"]) for c in created]
    assert {v["status"] for v in views} == {"completed"}
    texts = {(await result_of(stack, c["job_id"]))["text"] for c in created}
    assert len(texts) == 1
    recorded = [await pages_recorded(db_pool, c["job_id"]) for c in created]
    assert sorted(recorded) == [0, 0, 0, 6]


async def test_followers_of_a_cancelled_source_fail_with_a_sentence(
    stack: StackClient, tmp_path: Path
) -> None:
    images = [text_image([f"scan {uuid.uuid4()}", f"page {n}"]) for n in range(8)]
    data = pdf_with_pages(tmp_path / "slow.pdf", images).read_bytes()
    source = (await stack.post_job(data))["job_id"]
    follower = await stack.post_job(data)
    assert follower["deduplicated_from"] == source
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{stack.api}/v1/jobs/{source}/cancel", headers=stack.headers()
        )
    assert response.status_code == 202, response.text
    assert (await stack.wait_ended(source))["status"] == "cancelled"
    view = await stack.wait_ended(follower["job_id"])
    assert view["status"] == "failed"
    assert view["error"] == (
        f"The identical document processed by job {source} was cancelled before it "
        "finished; submit it again."
    )
    # A new submission after the cancel is processed, not attached to the cancelled job.
    fresh = await stack.post_job(data)
    assert fresh["deduplicated_from"] is None


async def test_followers_of_a_source_failed_by_its_deadline_fail_with_it(
    db_pool: asyncpg.Pool,
) -> None:
    source, follower = uuid.uuid4(), uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri, status, created_at) "
        "VALUES ($1, 'dedup-test', 'blob://none', 'processing', now() - interval '2 hours')",
        source,
    )
    await db_pool.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri, deduplicated_from) "
        "VALUES ($1, 'dedup-test', 'blob://none', $2)",
        follower,
        source,
    )
    outcome = await sweep_stalls(
        db_pool, stall_seconds=10**6, deadline_seconds=3600, on_ended=settle_followers
    )
    rows = {
        r["job_id"]: r
        for r in await db_pool.fetch(
            "SELECT job_id, status, error FROM jobs WHERE job_id = ANY($1::uuid[])",
            [source, follower],
        )
    }
    assert rows[source]["status"] == "failed"
    assert rows[follower]["status"] == "failed"
    assert rows[follower]["error"] == (
        f"The identical document processed by job {source} failed: {rows[source]['error']}"
    )
    assert {u["job_id"] for u in outcome.updates if u["final"]} == {str(source), str(follower)}
