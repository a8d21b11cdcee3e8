"""Batches and URL jobs through the whole running stack: a batch's documents are processed and
its result stream shows them completed; a cancelled batch's jobs end cancelled; a URL the
extractor may not download fails its job with a sentence naming the host."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def _post_batch(stack: StackClient, **kw: Any) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(f"{stack.api}/v1/batches", headers=stack.headers(), **kw)
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_a_batch_of_files_is_processed_and_its_results_stream(stack: StackClient) -> None:
    files = [
        ("files", ("first.txt", b"The first document of a batch.\n", "text/plain")),
        ("files", ("second.txt", b"The second document of a batch.\n", "text/plain")),
    ]
    batch = await _post_batch(stack, files=files, data={"labels": json.dumps({"run": "e2e"})})
    ids = [j["job_id"] for j in batch["jobs"]]
    for job_id in ids:
        final = await stack.wait(job_id)
        assert final["status"] == "completed", final
        assert final["batch_id"] == batch["batch_id"] and final["labels"] == {"run": "e2e"}
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.get(
            f"{stack.api}/v1/batches/{batch['batch_id']}/result",
            params={"inline": "true"},
            headers=stack.headers(),
        )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line["job_id"] for line in lines] == ids
    assert all(line["status"] == "completed" for line in lines)
    assert "first document" in lines[0]["result"]["text"]


async def test_a_url_the_extractor_may_not_fetch_fails_naming_the_host(
    stack: StackClient,
) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{stack.api}/v1/jobs",
            headers=stack.headers(),
            json={"url": "http://127.0.0.1/report.pdf"},
        )
    assert r.status_code == 202, r.text
    final = await stack.wait(r.json()["job_id"])
    assert final["status"] == "failed"
    assert "127.0.0.1" in final["error"] and "private or local network" in final["error"]


async def test_a_cancelled_batch_ends_its_jobs_cancelled(stack: StackClient) -> None:
    # Unreachable documents: the extractor retries them for seconds (each retry waits), so
    # they are unfinished when the cancel comes moments later; the cancel must end them all.
    urls = [f"https://cancel-{i}.invalid/doc.pdf" for i in range(3)]
    batch = await _post_batch(stack, json={"urls": urls})
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(
            f"{stack.api}/v1/batches/{batch['batch_id']}/cancel", headers=stack.headers()
        )
    assert r.status_code == 202, r.text
    assert r.json()["jobs_cancelled"] == 3
    finals = [await stack.wait(j["job_id"], timeout=60) for j in batch["jobs"]]
    assert [f["status"] for f in finals] == ["cancelled"] * 3, finals
    assert all(f["cancel_requested_at"] for f in finals)
