"""The OCR handler on the real bus and database: images.extracted in, page.ocred (with the OCR
text's chunks) out; cancelled jobs dropped; missing blobs fail the job."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest

from services.ocr.handler import make_handler
from shared import topology
from shared.blobstore import BlobStore
from shared.bus import Bus
from shared.events import ImageRef, ImagesExtracted, event_type_of
from shared.sandbox import WarmPool
from shared.service import ServiceContext
from shared.settings import Settings
from tests.conftest import delete_bus
from tests.fixtures import text_image
from tests.quality import cer

pytestmark = pytest.mark.integration

LINES = ["Quarterly results were strong", "across every region this year."]

Message = tuple[str, dict[str, Any]]


class Capture:
    """Every message on the exchange, through a temporary queue bound to '#'."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float = 60
    ) -> list[Message]:
        async with asyncio.timeout(timeout):
            while not predicate(self.messages):
                await asyncio.sleep(0.05)
        return self.messages

    def of(self, job_id: uuid.UUID, key: str) -> list[dict[str, Any]]:
        return [b for k, b in self.messages if k == key and b["job_id"] == str(job_id)]


@pytest.fixture(scope="module")
def settings(test_settings: Settings) -> Settings:
    # A topology of this module's own, so no other consumer of the session shares its queues.
    return test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_ocr"})


@pytest.fixture(scope="module")
async def harness(
    settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, ocr_engine: WarmPool
) -> AsyncIterator[tuple[ServiceContext, Capture, list[tuple[str, str]]]]:
    bus = Bus(settings, "ocr")
    outcomes: list[tuple[str, str]] = []
    bus.on_outcome.append(lambda group, outcome: outcomes.append((group, outcome)))
    ctx = ServiceContext("ocr", settings, bus, db_pool, BlobStore(settings.blob_dir))
    handler = make_handler(ctx, ocr_engine)
    bus.subscribe(topology.OCR, ImagesExtracted, handler, prefetch=settings.ocr_concurrency)
    await bus.start()
    capture = Capture()
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(bus.topology.exchange_name, routing_key="#")

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with msg.process():
                capture.messages.append(
                    (event_type_of(msg.routing_key or ""), json.loads(msg.body))
                )

        await queue.consume(on_message)
        yield ctx, capture, outcomes
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


def png_blob(blobs: BlobStore, image: Any) -> ImageRef:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    uri = blobs.put_bytes(buf.getvalue())
    return ImageRef(
        image_id=uuid.uuid4(), uri=uri, width=image.width, height=image.height, kind="page-scan"
    )


async def test_page_is_ocred_and_chunked(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, capture, _ = harness
    from PIL import Image

    job_id = await new_job(db_pool)
    scan = png_blob(ctx.blobs, text_image(LINES))
    icon = png_blob(ctx.blobs, Image.new("L", (10, 10), 0))
    await ctx.bus.publish(ImagesExtracted(job_id=job_id, page=2, images=[icon, scan]), priority=5)
    await capture.wait_for(lambda _: bool(capture.of(job_id, "page.ocred")))
    [ocred] = capture.of(job_id, "page.ocred")
    print(f"page OCR in {ocred['ocr_seconds']} s, CER {cer(chr(10).join(LINES), ocred['text'])}")
    assert ocred["page"] == 2
    assert ocred["error"] is None
    assert ocred["images_ocred"] == 1
    assert ocred["images_skipped"] == 1
    assert cer("\n".join(LINES), ocred["text"]) <= 0.05
    assert ocred["ocr_seconds"] > 0
    # The OCR text's chunks travel inside page.ocred (the analyzer consumes page events).
    [chunk] = ocred["chunks"]
    assert chunk["source"] == "ocr" and chunk["page"] == 2 and chunk["index"] == 0
    assert ocred["text"][chunk["start"] : chunk["end"]] == chunk["text"]


async def test_unreadable_image_is_a_page_error(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, capture, _ = harness
    job_id = await new_job(db_pool)
    good = png_blob(ctx.blobs, text_image(LINES))
    uri = ctx.blobs.put_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + uuid.uuid4().bytes)
    bad = ImageRef(image_id=uuid.uuid4(), uri=uri, width=800, height=600)
    await ctx.bus.publish(ImagesExtracted(job_id=job_id, page=1, images=[bad, good]))
    await capture.wait_for(lambda _: bool(capture.of(job_id, "page.ocred")))
    [ocred] = capture.of(job_id, "page.ocred")
    assert ocred["error"] == (
        "Page 1: OCR of image 1 failed: "
        "The image could not be read (corrupt or unsupported format)."
    )
    assert ocred["images_ocred"] == 1
    assert "Quarterly results" in ocred["text"]  # what the good image gave is kept
    assert capture.of(job_id, "job.failed") == []


async def test_missing_blob_fails_the_job(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, capture, _ = harness
    job_id = await new_job(db_pool)
    gone = ImageRef(image_id=uuid.uuid4(), uri="blob://sha256/" + "ab" * 32, width=900, height=900)
    await ctx.bus.publish(ImagesExtracted(job_id=job_id, page=3, images=[gone]))
    await capture.wait_for(lambda _: bool(capture.of(job_id, "job.failed")))
    [failed] = capture.of(job_id, "job.failed")
    assert failed["stage"] == "ocr"
    assert failed["reason"] == (
        "Image 1 of page 3 is missing from storage, so the page cannot be OCRed."
    )
    assert capture.of(job_id, "page.ocred") == []


async def test_cancelled_job_is_dropped(harness: Any, db_pool: asyncpg.Pool) -> None:
    ctx, capture, outcomes = harness
    job_id = await new_job(db_pool, status="cancelled")
    acked_before = outcomes.count(("ocr", "acked"))
    scan = png_blob(ctx.blobs, text_image(LINES))
    await ctx.bus.publish(ImagesExtracted(job_id=job_id, page=1, images=[scan]))
    async with asyncio.timeout(30):
        while outcomes.count(("ocr", "acked")) == acked_before:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # anything published would have arrived by now
    assert [k for k, b in capture.messages if b["job_id"] == str(job_id)] == ["images.extracted"]
    assert ("ocr", "retried") not in outcomes and ("ocr", "dead_lettered") not in outcomes
    conn = await aio_pika.connect(ctx.settings.amqp_url)
    try:
        channel = await conn.channel()
        name = ctx.bus.topology.queue_name(topology.OCR)
        queue = await channel.declare_queue(name, passive=True)
        assert queue.declaration_result.message_count == 0
    finally:
        await conn.close()


async def test_never_more_tesseracts_than_slots(
    harness: Any, db_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, ocr_engine: WarmPool
) -> None:
    """The service prefetches one image more than it has slots; the slots still bound the
    tesseracts running at once (handler called directly: the semaphore is under test)."""
    from services.ocr import handler as ocr_handler
    from services.ocr.tesseract import OcrResult

    ctx, _, _ = harness
    running = peak = 0

    async def fake_ocr(path: Any, **_: Any) -> OcrResult:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        return OcrResult(text="Hello there.", seconds=0.05, failure=None)

    monkeypatch.setattr(ocr_handler, "ocr_image", fake_ocr)
    handle = ocr_handler.make_handler(ctx, ocr_engine)
    job_id = await new_job(db_pool)
    scan = png_blob(ctx.blobs, text_image(LINES))

    class Delivery:
        priority = 0

    pages = [ImagesExtracted(job_id=job_id, page=p, images=[scan]) for p in range(1, 8)]
    await asyncio.gather(*(handle(event, Delivery()) for event in pages))  # type: ignore[arg-type]
    assert peak == ctx.settings.ocr_concurrency == 2
