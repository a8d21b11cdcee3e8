"""The extractor handler on the real bus and database: a document in, page events out."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.extractor.app import setup
from shared.blobstore import BlobStore
from shared.bus import Bus
from shared.events import DocumentUploaded, event_type_of
from shared.jobs import record_blob_owner
from shared.service import ServiceContext
from shared.settings import Settings
from tests.unit.extractor_fixtures import encrypted_pdf, text_pdf

pytestmark = pytest.mark.integration

PAGE_TEXTS = [
    "The first page mentions the Lisbon warehouse.",
    "The second page lists forty crates.",
]


class Tap:
    """A temporary queue bound to '#' on the test exchange: every event published."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.seen: list[tuple[str, dict[str, Any]]] = []

    async def collect(
        self, job_id: uuid.UUID, until: str, count: int = 1, timeout: float = 60
    ) -> list[tuple[str, dict[str, Any]]]:
        """This job's events, once `count` events with routing key `until` have arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = await self.queue.get(no_ack=True, fail=False)
            if msg is None:
                await asyncio.sleep(0.05)
                continue
            self.seen.append((event_type_of(msg.routing_key), json.loads(msg.body)))
            mine = [(k, b) for k, b in self.seen if b.get("job_id") == str(job_id)]
            if sum(k == until for k, _ in mine) >= count:
                await asyncio.sleep(0.3)  # let stragglers of the same job arrive
                while (extra := await self.queue.get(no_ack=True, fail=False)) is not None:
                    self.seen.append((event_type_of(extra.routing_key), json.loads(extra.body)))
                return [(k, b) for k, b in self.seen if b.get("job_id") == str(job_id)]
        raise AssertionError(f"no {until} for job {job_id} within {timeout} s; saw {self.seen}")


@pytest.fixture(scope="module")
async def extractor(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[tuple[Bus, Tap]]:
    bus = Bus(test_settings, "extractor")
    ctx = ServiceContext(
        "extractor", test_settings, bus, db_pool, BlobStore(test_settings.blob_dir)
    )
    await setup(ctx)
    await bus.start()
    try:
        queue = await bus.channel.declare_queue(
            f"{bus.topology.prefix}.tap.{uuid.uuid4().hex[:8]}", auto_delete=True
        )
        await queue.bind(bus.topology.exchange_name, routing_key="#")
        yield bus, Tap(queue)
    finally:
        await bus.stop()


async def test_two_page_pdf_becomes_page_and_chunk_events(
    extractor: tuple[Bus, Tap], test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    bus, tap = extractor
    uri = BlobStore(test_settings.blob_dir).put_file(text_pdf(tmp_path / "two.pdf", PAGE_TEXTS))
    await record_blob_owner(db_pool, "bus", uri)  # as ingest does for an upload
    job_id = uuid.uuid4()
    await bus.publish(DocumentUploaded(job_id=job_id, document_uri=uri, filename="two.pdf"))

    events = await tap.collect(job_id, until="page.extracted", count=2)
    by_key: dict[str, list[dict[str, Any]]] = {}
    for key, body in events:
        by_key.setdefault(key, []).append(body)

    (started,) = by_key["extraction.started"]
    assert started["format"] == "pdf" and started["pages_total"] == 2
    pages = sorted(by_key["page.extracted"], key=lambda b: b["page"])
    assert [p["page"] for p in pages] == [1, 2]
    assert [p["text"] for p in pages] == PAGE_TEXTS
    assert all(p["has_text_layer"] and not p["ocr_pending"] and p["error"] is None for p in pages)
    # Each page carries its own chunks: no per-chunk messages.
    assert "chunk.created" not in by_key
    chunks = [c for p in pages for c in p["chunks"]]
    assert [(c["page"], c["source"], c["text"]) for c in chunks] == [
        (1, "text-layer", PAGE_TEXTS[0]),
        (2, "text-layer", PAGE_TEXTS[1]),
    ]
    assert "job.failed" not in by_key
    # ensure_job created the row although nothing was inserted beforehand.
    assert await db_pool.fetchval("SELECT count(*) FROM jobs WHERE job_id = $1", job_id) == 1


async def test_encrypted_pdf_without_password_fails_the_job(
    extractor: tuple[Bus, Tap], test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    bus, tap = extractor
    plain = text_pdf(tmp_path / "plain.pdf", PAGE_TEXTS)
    locked = encrypted_pdf(tmp_path / "locked.pdf", plain, "hunter2")
    uri = BlobStore(test_settings.blob_dir).put_file(locked)
    await record_blob_owner(db_pool, "bus", uri)
    job_id = uuid.uuid4()
    await bus.publish(DocumentUploaded(job_id=job_id, document_uri=uri))

    events = await tap.collect(job_id, until="job.failed")
    failed = [b for k, b in events if k == "job.failed"]
    assert failed[0]["stage"] == "extractor"
    assert failed[0]["reason"] == "The PDF is encrypted; submit it again with its password."
    assert not [k for k, _ in events if k in ("page.extracted", "extraction.started")]


async def test_long_pdf_pages_travel_in_batches(
    extractor: tuple[Bus, Tap], test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """150 pages: batches of at most batch_size(150) = 3 pages, each page exactly once, and
    far fewer page messages than pages."""
    from services.extractor.service import batch_size

    bus, tap = extractor
    texts = [f"Page {n} of the long report lists {n * 7} crates in Lisbon." for n in range(150)]
    uri = BlobStore(test_settings.blob_dir).put_file(text_pdf(tmp_path / "long.pdf", texts))
    await record_blob_owner(db_pool, "bus", uri)
    job_id = uuid.uuid4()
    await bus.publish(DocumentUploaded(job_id=job_id, document_uri=uri, filename="long.pdf"))
    size = batch_size(150, test_settings.extract_batch_max_pages)
    assert size == 3

    wanted = 1
    while True:
        events = await tap.collect(job_id, until="pages.extracted", count=wanted)
        batches = [b["pages"] for k, b in events if k == "pages.extracted"]
        singles = [[b] for k, b in events if k == "page.extracted"]
        numbers = sorted(p["page"] for batch in batches + singles for p in batch)
        if len(numbers) >= 150:
            break
        wanted = len(batches) + 1
    assert numbers == list(range(1, 151)), "every page exactly once"
    assert all(1 < len(batch) <= size for batch in batches)
    assert len(batches) + len(singles) <= 150 // 2
    # Which pages travel alone depends on timing (a page whose neighbours are not ready yet
    # goes as a single), so page 7 is looked up among every page message.
    page = next(p for batch in batches + singles for p in batch if p["page"] == 7)
    assert page["text"] == texts[6] and page["chunks"][0]["text"] == texts[6]
    assert "job.failed" not in {k for k, _ in events}
