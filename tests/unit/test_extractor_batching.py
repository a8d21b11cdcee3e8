"""How ExtractionRun turns a child's page records into page.extracted / pages.extracted
messages: batch size by page count, the text cap, the time bound, images first, drain."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from services.extractor.service import ExtractionRun
from services.extractor.spec import (
    ChildRecord,
    fatal_record,
    image_record,
    meta_record,
    page_record,
)
from shared.events import (
    DocumentUploaded,
    Event,
    ExtractionStarted,
    ImagesExtracted,
    PageExtracted,
    PagesExtracted,
)
from shared.settings import Settings
from tests.waiting import wait_until


class RecordingBus:
    """Stands in for the bus: this tests the batching logic, not the broker."""

    def __init__(self) -> None:
        self.published: list[Event] = []

    async def publish(self, event: Event, *, priority: int | None = None) -> None:
        await asyncio.sleep(0)
        self.published.append(event)


def line(record: ChildRecord) -> bytes:
    return json.dumps(record).encode()


async def run_pages(pages_total: int, texts: dict[int, str], **run_kw: Any) -> list[Event]:
    bus = RecordingBus()
    event = DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "0" * 64)
    run = ExtractionRun(event, bus, Settings(), **run_kw)  # type: ignore[arg-type]
    await run.on_line(line(meta_record("pdf", pages_total)))
    for n in range(1, pages_total + 1):
        text = texts.get(n, f"Page {n} says something about crates.")
        images = [image_record("blob://sha256/" + "1" * 64, 900, 900, "embedded")] if n == 5 else []
        await run.on_line(line(page_record(n, text, has_text_layer=True, images=images)))
    await run.drain()
    return bus.published


def pages_of(published: list[Event]) -> list[list[int]]:
    out: list[list[int]] = []
    for ev in published:
        if isinstance(ev, PagesExtracted):
            out.append([p.page for p in ev.pages])
        elif isinstance(ev, PageExtracted):
            out.append([ev.page])
    return out


async def test_short_documents_go_page_by_page() -> None:
    published = await run_pages(20, {})
    assert isinstance(published[0], ExtractionStarted)
    # One message per page (publishes overlap, so they may be confirmed out of order).
    assert sorted(pages_of(published)) == [[n] for n in range(1, 21)]
    assert not any(isinstance(e, PagesExtracted) for e in published)


async def test_long_documents_go_in_batches_of_two_percent() -> None:
    published = await run_pages(300, {})  # batch_size(300) = 6
    batches = pages_of(published)
    assert sorted(n for b in batches for n in b) == list(range(1, 301))
    assert all(len(b) <= 6 for b in batches) and len(batches) == 50
    # The page with images: its images.extracted is published before the batch holding it.
    images_at = next(i for i, e in enumerate(published) if isinstance(e, ImagesExtracted))
    holder = next(i for i, e in enumerate(published) if 5 in sum(pages_of([e]), []))
    assert images_at < holder


async def test_a_batch_is_cut_at_the_text_cap() -> None:
    big = {n: "word " * 4000 for n in range(1, 301)}  # 20,000 characters a page
    batches = pages_of(await run_pages(300, big, batch_max_chars=50_000))
    assert all(len(b) <= 3 for b in batches)  # 3 pages reach the cap
    assert sorted(n for b in batches for n in b) == list(range(1, 301))


async def test_a_page_never_waits_long_for_its_batch() -> None:
    bus = RecordingBus()
    event = DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "0" * 64)
    run = ExtractionRun(event, bus, Settings(), batch_seconds=0.05)  # type: ignore[arg-type]
    await run.on_line(line(meta_record("pdf", 1000)))
    await run.on_line(line(page_record(1, "Slow page.", has_text_layer=True)))
    assert pages_of(bus.published) == []  # held for its batch of 20...
    # ...but not for longer than batch_seconds (generous bound: the timer, not the load).
    await wait_until(lambda: pages_of(bus.published) == [[1]], timeout=5, what="the page left")
    await run.drain()


async def test_lines_that_are_not_records_are_ignored() -> None:
    """The child's records are checked as they cross the process boundary: a line that is not
    one of them (garbled, an unknown type, a page without its fields) publishes nothing."""
    bus = RecordingBus()
    event = DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "0" * 64)
    run = ExtractionRun(event, bus, Settings())  # type: ignore[arg-type]
    await run.on_line(line(meta_record("pdf", 2)))
    await run.on_line(b"not json\n")
    await run.on_line(b'{"type": "chapter", "page": 1}\n')
    await run.on_line(b'{"type": "page", "page": 1, "text": "No other fields."}\n')
    await run.on_line(
        b'{"type": "page", "page": "one", "text": "", "has_text_layer": false,'
        b' "images": [], "error": null}\n'
    )
    await run.drain()
    assert [type(e) for e in bus.published] == [ExtractionStarted] and run.pages_done == 0
    await run.on_line(line(page_record(1, "A real page.", has_text_layer=True)))
    await run.drain()
    assert pages_of(bus.published) == [[1]] and run.pages_done == 1


async def test_a_fatal_record_stops_the_run() -> None:
    bus = RecordingBus()
    event = DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "0" * 64)
    run = ExtractionRun(event, bus, Settings())  # type: ignore[arg-type]
    await run.on_line(line(meta_record("pdf", 2)))
    await run.on_line(line(fatal_record("The document is encrypted.")))
    await run.on_line(line(page_record(1, "After the end.", has_text_layer=True)))
    await run.drain()
    assert run.fatal == "The document is encrypted." and pages_of(bus.published) == []
