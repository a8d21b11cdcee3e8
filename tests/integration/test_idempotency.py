"""Nothing duplicated: every message of a finished job delivered twice more changes nothing.

A capture queue bound to '#' on the test exchange records every message of a multi-page job
(text pages and a scanned page). Once the job has completed, each captured message is
published twice again, with the same message id, body and headers, and the stack is left to
drain. The result must be byte-identical and the counters, chunks and cost unchanged.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from shared.events import event_type_of
from shared.settings import Settings
from shared.topology import Topology
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration

PAGES = [
    "Purchase order 5521 for Globex Ltd.\nShip to 12 Harbour Road.\nTotal $980.00.",
    text_image(["Scanned delivery note", "received in good order", "signed J. Smith"]),
    "Terms: payment within thirty days.\nQuestions to orders@globex.example.",
]


@dataclass(frozen=True)
class Captured:
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    message_id: str | None
    correlation_id: str | None
    content_type: str | None
    priority: int | None


def received_by_progress(metrics_text: str) -> float:
    """docpipe_messages_total{queue="progress", outcome="received"} from /metrics."""
    total = 0.0
    for line in metrics_text.splitlines():
        if (
            line.startswith("docpipe_messages_total{")
            and 'outcome="received"' in line
            and re.search(r'queue="progress"', line)
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def progress_received(stack: StackClient) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{stack.stack.url('progress')}/metrics")
    return received_by_progress(response.text)


async def queue_depths(channel: aio_pika.abc.AbstractChannel, names: list[str]) -> dict[str, int]:
    depths = {}
    for name in names:
        queue = await channel.declare_queue(name, passive=True)
        depths[name] = queue.declaration_result.message_count or 0
    return depths


async def wait_drained(
    stack: StackClient,
    settings: Settings,
    *,
    progress_target: float,
    stable_seconds: float = 2.0,
    timeout: float = 120.0,
) -> None:
    """Until the progress service has received `progress_target` messages and every queue of
    the topology has stayed empty for `stable_seconds` (ready counts, polled)."""
    topo = Topology.from_settings(settings)
    names = [n for n in topo.all_queue_names() if not n.endswith(".dlq")]
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        deadline = time.monotonic() + timeout
        empty_since: float | None = None
        while True:
            depths = await queue_depths(channel, names)
            received = await progress_received(stack)
            now = time.monotonic()
            if any(depths.values()) or received < progress_target:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif now - empty_since >= stable_seconds:
                return
            if now > deadline:
                raise TimeoutError(f"not drained: {depths}, progress received {received}")
            await asyncio.sleep(0.25)
    finally:
        await connection.close()


async def job_numbers(pool: asyncpg.Pool, job_id: str) -> dict[str, Any]:
    progress = await pool.fetch(
        "SELECT stage, total, done, failed FROM job_progress WHERE job_id = $1 ORDER BY stage",
        job_id,
    )
    row = await pool.fetchrow(
        "SELECT count(*) AS chunks, coalesce(sum(cost_usd), 0) AS cost "
        "FROM job_chunks WHERE job_id = $1",
        job_id,
    )
    job = await pool.fetchrow(
        "SELECT status, seq, percent, error, finished_at FROM jobs WHERE job_id = $1", job_id
    )
    updates = await pool.fetchval("SELECT count(*) FROM job_updates WHERE job_id = $1", job_id)
    dead = await pool.fetchval("SELECT count(*) FROM dead_letters WHERE job_id = $1", job_id)
    return {
        "progress": [tuple(r) for r in progress],
        "chunks": row["chunks"],
        "cost": row["cost"],
        "job": dict(job),
        "updates": updates,
        "dead_letters": dead,
    }


async def test_every_message_replayed_twice_changes_nothing(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    topo = Topology.from_settings(test_settings)
    pdf = pdf_with_pages(tmp_path / "order.pdf", PAGES)
    captured: list[Captured] = []

    connection = await aio_pika.connect(test_settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(topo.exchange_name)
        capture = await channel.declare_queue(exclusive=True, auto_delete=True)
        await capture.bind(exchange, routing_key="#")

        async def record(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                captured.append(
                    Captured(
                        routing_key=message.routing_key or "",
                        body=message.body,
                        headers=dict(message.headers or {}),
                        message_id=message.message_id,
                        correlation_id=message.correlation_id,
                        content_type=message.content_type,
                        priority=message.priority,
                    )
                )

        await capture.consume(record)

        job_id = await stack.submit_ok(pdf)
        final = await stack.wait(job_id)
        assert final["status"] == "completed", final

        def ours() -> list[Captured]:
            return [c for c in captured if json.loads(c.body).get("job_id") == job_id]

        async with asyncio.timeout(30):  # job.completed is the last message of the job
            while not any(c.routing_key == "job.completed" for c in ours()):
                await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        mine = ours()
        kinds = {event_type_of(c.routing_key) for c in mine}
        assert {
            "document.uploaded", "extraction.started", "page.extracted", "images.extracted",
            "page.ocred", "chunks.analyzed", "job.completed",
        } <= kinds, kinds  # fmt: skip

        result_before = (await stack.result(job_id)).content
        numbers_before = await job_numbers(db_pool, job_id)
        assert numbers_before["chunks"] > 0
        received_before = await progress_received(stack)

        for _ in range(2):
            for c in mine:
                await exchange.publish(
                    aio_pika.Message(
                        c.body,
                        headers=c.headers,
                        message_id=c.message_id,
                        correlation_id=c.correlation_id,
                        content_type=c.content_type,
                        priority=c.priority,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=c.routing_key,
                )
        # Every captured message went through the progress queue ('#'), so the progress
        # service must see each of them twice more.
        await wait_drained(stack, test_settings, progress_target=received_before + 2 * len(mine))
    finally:
        await connection.close()

    result_after = (await stack.result(job_id)).content
    assert result_after == result_before
    assert await job_numbers(db_pool, job_id) == numbers_before
    assert not stack.stack.deaths(), stack.stack.deaths()
    print(f"idempotency: {len(mine)} messages of the job, each published twice more: no change")
