"""A poison message: valid JSON whose content can never apply (a page of a job that does not
exist). The progress service retries it through the delay queues, then it is dead-lettered
(the progress service records its DLQs in dead_letters) with its history, and jobs submitted
right after it complete meanwhile."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.bus import Bus
from shared.events import PageExtracted
from tests.fixtures import pdf_with_pages
from tests.reliability.conftest import ReliabilityStack

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

JOBS_BEHIND = 6
# The poison's retry ladder (7 s in all) is far longer than a small job takes even on a loaded
# 2-core machine (about 2 s), so "a job completed while the poison was being retried" holds by
# construction; with the short ladder (1.4 s) the poison could be dead-lettered first.
POISON_RETRIES_MS = (1000, 2000, 4000)
LADDER_SECONDS = sum(POISON_RETRIES_MS) / 1000


async def dead_letter_of(rs: ReliabilityStack, message_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(rs.settings.database_url)
    try:
        return await conn.fetchrow("SELECT * FROM dead_letters WHERE message_id = $1", message_id)
    finally:
        await conn.close()


async def dead_letter_count(rs: ReliabilityStack) -> int:
    conn = await asyncpg.connect(rs.settings.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM dead_letters"))
    finally:
        await conn.close()


async def settled(
    rs: ReliabilityStack, timeout: float = 30.0 + 2 * LADDER_SECONDS
) -> tuple[dict[str, int], Counter[tuple[str, str]]]:
    """Wait until no queue holds a message and the progress service has settled everything it
    received, after at least the poison's retries and the ghost JobFailed's (2 x the ladder);
    returns the last queue depths and progress message counts either way."""
    deadline = time.monotonic() + timeout
    while True:
        depths = await rs.queue_depths()
        counts = (await rs.metrics())["progress"]
        settled_count = sum(
            counts[("progress", outcome)] for outcome in ("acked", "retried", "dead_lettered")
        )
        if (
            not any(depths.values())
            and counts[("progress", "received")] == settled_count
            and counts[("progress", "retried")] >= 2 * len(POISON_RETRIES_MS)
        ) or time.monotonic() > deadline:
            return depths, counts
        await asyncio.sleep(0.1)


async def test_poison_message_is_dead_lettered_and_blocks_nothing(
    private_stack: Any, tmp_path: Path
) -> None:
    docs = [
        pdf_with_pages(tmp_path / f"behind{i}.pdf", [f"Document {i} submitted behind a poison."])
        for i in range(JOBS_BEHIND)
    ]
    async with private_stack("poison", retry_delays_ms=POISON_RETRIES_MS) as rs:
        # Warm up (first pool connections, extractor imports) so timings below mean something.
        warm = await rs.client.submit_ok(docs[0])
        assert (await rs.client.wait(warm, timeout=60))["status"] == "completed"
        ghost = uuid.uuid4()
        poison = PageExtracted(job_id=ghost, page=1, text="a page of a job nobody created")
        bus = Bus(rs.settings, "poisoner")
        await bus.connect()
        try:
            t0 = time.monotonic()
            await bus.publish(poison)
        finally:
            await bus.stop()
        jobs = await asyncio.gather(*(rs.client.submit_ok(d) for d in docs))

        async def finished_at(job: str) -> float:
            final = await rs.client.wait(job, timeout=60)
            assert final["status"] == "completed", final
            return time.monotonic() - t0

        async def dead_lettered_at() -> float:
            # The progress service consumes the dead-letter queues into the dead_letters table.
            deadline = time.monotonic() + 30 + LADDER_SECONDS
            while await dead_letter_of(rs, poison.message_id()) is None:
                assert time.monotonic() < deadline, "the poison was never dead-lettered"
                await asyncio.sleep(0.05)
            return time.monotonic() - t0

        *job_times, dlq_time = await asyncio.gather(
            *(finished_at(j) for j in jobs), dead_lettered_at()
        )
        print(
            f"poison dead-lettered after {dlq_time:.2f} s; jobs behind it completed after "
            f"{min(job_times):.2f}..{max(job_times):.2f} s"
        )
        # Retries wait in delay queues, never at the head of the work queue.
        assert min(job_times) < dlq_time, "no job completed while the poison was retried"
        assert dlq_time >= LADDER_SECONDS * 0.8, "dead-lettered before retrying"

        letter = await dead_letter_of(rs, poison.message_id())
        assert letter is not None
        assert letter["queue"] == f"{rs.settings.bus_prefix}.progress"
        assert letter["routing_key"] == "page.extracted"
        assert letter["reason"] == "retries-exhausted"
        assert letter["attempts"] == len(POISON_RETRIES_MS)
        assert "JobNotFoundYet" in (letter["error"] or "")
        assert str(letter["job_id"]) == str(ghost)
        assert PageExtracted.model_validate_json(bytes(letter["body"])) == poison

        # The JobFailed announced for the ghost job is dropped, not dead-lettered; the queues
        # drain and every handled message is accounted for.
        depths, counts = await settled(rs)
        assert not {q: n for q, n in depths.items() if n}, depths
        assert await dead_letter_count(rs) == 1, "only the poison was dead-lettered"
        assert counts[("progress", "dead_lettered")] == 1
        assert counts[("progress", "retried")] >= 2 * len(POISON_RETRIES_MS)
        assert counts[("progress", "received")] == (
            counts[("progress", "acked")]
            + counts[("progress", "retried")]
            + counts[("progress", "dead_lettered")]
        )
        assert not rs.stack.deaths()
