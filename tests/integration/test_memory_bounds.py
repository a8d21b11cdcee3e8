"""Memory for large valid input: one ~19 MB plain-text document, within every limit, keeps the
own process of ingest, extractor, analyzer and progress under 300 MB resident the whole way
through, and fetching its result keeps ingest there too (issue #10: 632 MB to 1 GB before).

The services run as processes of a stack of their own, so no other test's work is in the
figures; RSS is sampled every 100 ms (benchmarks/memory.py, which `make bench` also runs, with
three documents at once).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from benchmarks.memory import PARENT_PEAK_MAX_MB, TEXT_SERVICES, RssSampler, large_text
from scripts.stack import Stack
from shared.settings import Settings
from tests.integration.stack_client import StackClient
from tests.stack_fixture import own_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def quiet_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[StackClient]:
    """A stack on its own bus prefix, without the local model server (no LLM job here)."""
    quiet = {
        "DOCPIPE_LOG_LEVEL": "WARNING",  # one log line per message is not what is measured
        "DOCPIPE_LLM_BASE_URL": "http://127.0.0.1:9/v1",  # never called: no job asks for it
    }
    async with own_stack(test_settings, "mem", quiet) as client:
        yield client


def parent_pids(stack: Stack) -> dict[str, int]:
    return {
        name: svc.proc.pid
        for name, svc in stack.services.items()
        if name in TEXT_SERVICES and svc.proc is not None
    }


async def test_one_19_mb_text_keeps_every_service_under_300_mb(quiet_stack: StackClient) -> None:
    document = large_text(salt=uuid.uuid4().hex)
    assert 18 * 2**20 < len(document) < 20 * 2**20
    sampler = RssSampler(parent_pids(quiet_stack.stack))
    with sampler.running():
        response = await quiet_stack.submit(data=document, name="large.txt", ocr="never")
        assert response.status_code == 202, response.text
        job_id = str(response.json()["job_id"])
        final = await quiet_stack.wait(job_id, timeout=300)
        assert final["status"] == "completed", final
        async with httpx.AsyncClient(timeout=120) as client:
            result = await client.get(
                f"{quiet_stack.api}/v1/jobs/{job_id}/result", headers=quiet_stack.headers()
            )
    assert result.status_code == 200
    body = result.json()
    # Nothing lost on the way: the whole text, cut into pages of bounded size.
    assert body["pages_total"] == len(body["pages"]) > 1
    assert len(body["text"]) > 18 * 2**20 and body["chunks"]
    peaks = sampler.report()
    print(f"peak RSS (MB): {peaks}")
    assert sampler.samples > 10
    over = {n: p["parent_peak_mb"] for n, p in peaks.items() if p["parent_peak_mb"] >= 300}
    assert not over, f"over {PARENT_PEAK_MAX_MB} MB: {over} (all: {peaks})"
