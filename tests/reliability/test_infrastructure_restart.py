"""Restart RabbitMQ, then PostgreSQL, while 20 jobs are in flight. Every service reconnects on
its own (no process dies), readiness shows the outage and the recovery, and all 20 jobs
complete with the result an undisturbed run gives."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import pdf_with_pages, text_image
from tests.reliability.conftest import (
    SHORT_RETRIES_MS,
    ReliabilityStack,
    comparable_result,
    postgres_stopped,
    rabbitmq_stopped,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

JOBS = 20
OUTAGE_SECONDS = 3.0


def documents(tmp: Path) -> list[Path]:
    """20 documents of 4-6 pages, two of them with a scanned page (OCR keeps them busy)."""
    docs = []
    for i in range(JOBS):
        pages: list[Any] = [
            f"Document {i}, page {n}.\nInvoice {4000 + i * 10 + n} is due on 2025-03-0{n}.\n"
            + "Payment terms are thirty days net. " * 20
            for n in range(1, 5 + i % 3)
        ]
        if i % 10 == 3:
            pages.insert(1, text_image([f"Scanned annex of document {i}", "signed and dated"]))
        docs.append(pdf_with_pages(tmp / f"doc{i:02d}.pdf", pages))
    return docs


async def in_flight(rs: ReliabilityStack, jobs: list[str], timeout: float = 30.0) -> None:
    """Wait until the pipeline is busy: some jobs started, most not finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = await rs.job_statuses(jobs)
        started = sum(1 for s, _ in statuses.values() if s != "queued")
        if started >= 2:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("no job started")


async def readiness_sample(rs: ReliabilityStack, check: str) -> dict[str, bool]:
    return {
        name: bool(body.get("checks", {}).get(check))
        for name, body in (await rs.readiness()).items()
    }


async def run_under_outage(
    private_stack: Any,
    name: str,
    tmp_path: Path,
    outage: Any,
    check: str,
    *,
    submit_during_outage: int = 0,
) -> None:
    """Reference run, then the same documents again with `outage` in the middle; optionally
    some documents submitted while the server is away (accepted into the ingest outbox)."""
    docs = documents(tmp_path)
    async with private_stack(name, retry_delays_ms=SHORT_RETRIES_MS) as rs:
        # Undisturbed reference results, one per document.
        t0 = time.monotonic()
        reference_jobs = await asyncio.gather(*(rs.client.submit_ok(d) for d in docs))
        statuses = await rs.wait_all(reference_jobs, timeout=120)
        assert {s for s, _ in statuses.values()} == {"completed"}, statuses
        reference = {
            d.name: comparable_result((await rs.client.result(j)).json())
            for d, j in zip(docs, reference_jobs, strict=True)
        }
        print(f"{name}: undisturbed run of {JOBS} jobs took {time.monotonic() - t0:.1f} s")

        t0 = time.monotonic()
        jobs = await asyncio.gather(*(rs.client.submit_ok(d) for d in docs))
        await in_flight(rs, jobs)
        before = await rs.job_statuses(jobs)
        down_at = time.monotonic()
        late_docs = docs[3 : 3 + submit_during_outage]  # docs[3] has a scanned page
        async with outage:
            late = asyncio.gather(*(rs.client.submit_ok(d) for d in late_docs))
            await asyncio.sleep(OUTAGE_SECONDS / 2)
            during = await readiness_sample(rs, check)
            await asyncio.sleep(OUTAGE_SECONDS / 2)
        up_after = time.monotonic() - down_at
        late_jobs = await late
        docs, jobs = docs + late_docs, jobs + late_jobs
        await rs.stack.wait_ready(60)
        ready_after = time.monotonic() - down_at
        statuses = await rs.wait_all(jobs, timeout=120)
        print(
            f"{name}: at the outage {sum(s != 'completed' for s, _ in before.values())} of "
            f"{JOBS} jobs were open, {len(late_jobs)} submitted during it; server back after "
            f"{up_after:.1f} s, all services ready "
            f"after {ready_after:.1f} s, all jobs ended after {time.monotonic() - t0:.1f} s"
        )
        assert not any(during.values()), f"readiness did not show {check} down: {during}"
        failed = {j: s for j, s in statuses.items() if s[0] != "completed"}
        assert not failed, f"jobs that did not complete: {failed}"
        for doc, job in zip(docs, jobs, strict=True):
            result = comparable_result((await rs.client.result(job)).json())
            assert result == reference[doc.name], f"{doc.name}: result differs after the outage"
        assert not rs.stack.deaths(), f"services died instead of reconnecting: {rs.stack.deaths()}"


async def test_broker_restart_with_twenty_jobs_in_flight(
    private_stack: Any, infrastructure_guard: None, tmp_path: Path, test_settings: Any
) -> None:
    await run_under_outage(
        private_stack,
        "broker",
        tmp_path,
        rabbitmq_stopped(test_settings.amqp_url),
        "broker",
        submit_during_outage=2,
    )


async def test_database_restart_with_twenty_jobs_in_flight(
    private_stack: Any, infrastructure_guard: None, tmp_path: Path
) -> None:
    await run_under_outage(private_stack, "database", tmp_path, postgres_stopped(), "database")
