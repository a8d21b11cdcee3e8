"""The analyzer handler on the real bus and database: page events (with their chunks) in, one
chunks.analyzed per page out; chunk-less pages and cancelled jobs dropped."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.analyzer.handler import make_handler
from services.analyzer.interface import get_analyzer
from shared import topology
from shared.blobstore import BlobStore
from shared.bus import Bus
from shared.events import Chunk, PageExtracted, PageOcred, PagesExtracted, PageSource, event_type_of
from shared.service import ServiceContext
from shared.settings import Settings
from tests.conftest import delete_bus

pytestmark = pytest.mark.integration

TEXT = (
    "Invoice for ACME Corporation. Contact billing@acme.example or +1 415 555 0100. "
    "The total due is $1,250.00 by March 3, 2025."
)

Message = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def settings(test_settings: Settings) -> Settings:
    # A topology of this module's own, so no other consumer of the session shares its queues.
    return test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_analyzer"})


@pytest.fixture(scope="module")
async def harness(
    settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[ServiceContext, list[Message], list[tuple[str, str]]]]:
    bus = Bus(settings, "analyzer")
    outcomes: list[tuple[str, str]] = []
    bus.on_outcome.append(lambda group, outcome: outcomes.append((group, outcome)))
    ctx = ServiceContext("analyzer", settings, bus, db_pool, BlobStore(settings.blob_dir))
    bus.subscribe(
        topology.ANALYZER,
        (PageExtracted, PagesExtracted, PageOcred),
        make_handler(ctx, get_analyzer("builtin")),
        prefetch=settings.prefetch,
    )
    await bus.start()
    messages: list[Message] = []
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(bus.topology.exchange_name, routing_key="#")

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                messages.append((event_type_of(msg.routing_key or ""), json.loads(msg.body)))

        await queue.consume(on_message)
        yield ctx, messages, outcomes
    finally:
        await conn.close()
        await bus.stop()
        await delete_bus(settings)


async def new_job(pool: asyncpg.Pool, status: str = "processing") -> uuid.UUID:
    job_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri, status) VALUES ($1, $2, $3, $4)",
        job_id,
        "test",
        "blob://sha256/" + "0" * 64,
        status,
    )
    return job_id


def chunk_for(
    job_id: uuid.UUID,
    text: str,
    index: int = 0,
    source: PageSource = PageSource.TEXT_LAYER,
    start: int = 0,
) -> Chunk:
    return Chunk(
        chunk_id=Chunk.make_id(job_id, 1, source, index),
        page=1,
        index=index,
        source=source,
        start=start,
        end=start + len(text),
        text=text,
    )


def page_with(job_id: uuid.UUID, *texts: str) -> PageExtracted:
    chunks, start = [], 0
    for i, text in enumerate(texts):
        chunks.append(chunk_for(job_id, text, index=i, start=start))
        start += len(text) + 2
    return PageExtracted(
        job_id=job_id, page=1, text="\n\n".join(texts), has_text_layer=True, chunks=chunks
    )


def of(messages: list[Message], job_id: uuid.UUID, key: str) -> list[dict[str, Any]]:
    return [b for k, b in messages if k == key and b["job_id"] == str(job_id)]


async def test_page_chunks_are_analyzed_in_one_message(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, messages, _ = harness
    job_id = await new_job(db_pool)
    page = page_with(job_id, TEXT, "Second chunk, in German: Der Vertrag endet am 31.12.2025.")
    await ctx.bus.publish(page, priority=3)
    async with asyncio.timeout(30):
        while not of(messages, job_id, "chunks.analyzed"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # a second message for the page would have arrived by now
    [analyzed] = of(messages, job_id, "chunks.analyzed")
    assert analyzed["page"] == 1 and analyzed["source"] == "text-layer"
    items = analyzed["items"]
    assert [i["chunk"] for i in items] == [c.model_dump(mode="json") for c in page.chunks]
    assert items[1]["analysis"]["entities"] == [
        {"kind": "date", "text": "31.12.2025", "start": 46, "end": 56}
    ]
    analysis = items[0]["analysis"]
    assert analysis["analyzer"] == "builtin/1"
    assert analysis["language"] == "en"
    assert analysis["cost_usd"] == 0.0
    assert [(e["kind"], e["text"]) for e in analysis["entities"]] == [
        ("email", "billing@acme.example"),
        ("phone", "+1 415 555 0100"),
        ("money", "$1,250.00"),
        ("date", "March 3, 2025"),
    ]
    for entity in analysis["entities"]:
        assert TEXT[entity["start"] : entity["end"]] == entity["text"]
    assert "acme" in analysis["keywords"]


async def test_cancelled_job_is_dropped(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, messages, outcomes = harness
    job_id = await new_job(db_pool, status="cancelled")
    acked_before = outcomes.count(("analyzer", "acked"))
    await ctx.bus.publish(page_with(job_id, TEXT))
    async with asyncio.timeout(30):
        while outcomes.count(("analyzer", "acked")) == acked_before:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything published would have arrived by now
    assert [k for k, b in messages if b["job_id"] == str(job_id)] == ["page.extracted"]
    assert ("analyzer", "retried") not in outcomes
    conn = await aio_pika.connect(ctx.settings.amqp_url)
    try:
        channel = await conn.channel()
        name = ctx.bus.topology.queue_name(topology.ANALYZER)
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        await conn.close()


async def test_ocr_chunks_are_analyzed_and_chunkless_pages_ignored(
    harness: Any, db_pool: asyncpg.Pool
) -> None:
    ctx, messages, _ = harness
    job_id = await new_job(db_pool)
    # A scanned page: nothing in its text layer; its OCR text comes in page.ocred.
    await ctx.bus.publish(PageExtracted(job_id=job_id, page=1, ocr_pending=True))
    ocr_chunk = chunk_for(job_id, TEXT, source=PageSource.OCR)
    await ctx.bus.publish(PageOcred(job_id=job_id, page=1, text=TEXT, chunks=[ocr_chunk]))
    async with asyncio.timeout(30):
        while not of(messages, job_id, "chunks.analyzed"):
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    [analyzed] = of(messages, job_id, "chunks.analyzed")
    assert analyzed["source"] == "ocr"
    assert [i["chunk"]["chunk_id"] for i in analyzed["items"]] == [str(ocr_chunk.chunk_id)]
