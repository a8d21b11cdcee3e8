"""The in-memory bus: typed subscriptions through the same pipeline as RabbitMQ's, and a
service's handlers driven through it without a broker (the analyzer's, via its real setup)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest

from services.analyzer.app import setup as analyzer_setup
from shared import topology
from shared.blobstore import BlobStore
from shared.bus import H_QUEUE, H_REASON, Delivery, InboundMessage, MemoryBus
from shared.bus.memory import topic_matches
from shared.chunking import make_chunks
from shared.events import (
    ChunksAnalyzed,
    DocumentUploaded,
    ImagesExtracted,
    JobCancelled,
    JobFailed,
    PageExtracted,
    PageOcred,
    PagesExtracted,
    PageSource,
)
from shared.jobs import clear_job_cache
from shared.service import ServiceContext
from shared.settings import Settings


def uploaded() -> DocumentUploaded:
    return DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://sha256/" + "a" * 64)


@pytest.fixture
def bus() -> MemoryBus:
    return MemoryBus(Settings.model_construct(retry_delays_ms=[10, 20]), "test")


# --- subscriptions -------------------------------------------------------------------------


async def test_the_handler_receives_the_type_it_subscribed_with(bus: MemoryBus) -> None:
    got: list[tuple[DocumentUploaded, int]] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        got.append((event, delivery.priority))

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=4)
    event = uploaded()
    await bus.publish(event, priority=7)
    assert got == [(event, 7)]
    assert bus.published[0].headers["x-event-type"] == "document.uploaded"


async def test_one_queue_dispatches_each_type_to_its_own_handler(bus: MemoryBus) -> None:
    seen: list[str] = []

    async def on_pages(event: PageExtracted | PagesExtracted, delivery: Delivery) -> None:
        seen.append(f"text:{event.routing_key}")

    async def on_ocr(event: PageOcred, delivery: Delivery) -> None:
        seen.append(f"ocr:{event.page}")

    bus.subscribe(topology.ANALYZER, (PageExtracted, PagesExtracted), on_pages, prefetch=2)
    bus.subscribe(topology.ANALYZER, PageOcred, on_ocr, prefetch=8)
    job = uuid.uuid4()
    chunks = make_chunks(job, 1, PageSource.OCR, "Some words on a page.", 1000)
    await bus.publish(PageOcred(job_id=job, page=1, text="Some words on a page.", chunks=chunks))
    await bus.publish(PageExtracted(job_id=job, page=2, ocr_pending=True))  # no chunks: not routed
    assert seen == ["ocr:1"]
    assert bus.groups["analyzer"].prefetch == 8


def test_a_type_is_handled_once_per_group_and_ack_modes_agree(bus: MemoryBus) -> None:
    async def handle(event: Any, delivery: Delivery) -> None:
        pass

    bus.subscribe(topology.PROGRESS, JobFailed, handle, prefetch=1, coalesce_acks=True)
    with pytest.raises(ValueError, match="already handles job.failed"):
        bus.subscribe(topology.PROGRESS, JobFailed, handle, prefetch=1, coalesce_acks=True)
    with pytest.raises(ValueError, match="coalesce_acks"):
        bus.subscribe(topology.PROGRESS, JobCancelled, handle, prefetch=1)


async def test_an_event_type_without_a_handler_on_the_queue_is_malformed(bus: MemoryBus) -> None:
    failures: list[JobFailed] = []

    async def handle(event: JobFailed, delivery: Delivery) -> None:
        failures.append(event)

    bus.subscribe(topology.PROGRESS, JobFailed, handle, prefetch=1)  # bound to '#'
    event = uploaded()
    await bus.publish(event)
    (dead,) = bus.dead_letters
    assert (dead.group, dead.reason) == ("progress", "malformed")
    assert "no handler for 'document.uploaded'" in dead.error
    # It names a job: that job fails, with a sentence (and the job.failed itself is handled).
    (failed,) = bus.job_failures()
    assert failed.job_id == event.job_id
    assert failed.reason.startswith("The message for this job could not be read: ")
    assert failures == [failed] and bus.retries == []


async def test_a_malformed_upload_fails_its_job_and_is_dead_lettered(bus: MemoryBus) -> None:
    handled: list[Any] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    job = uuid.uuid4()
    await bus.publish_raw(f'{{"job_id": "{job}", "bogus": 1}}'.encode(), "document.uploaded")
    assert handled == []
    (dead,) = bus.dead_letters
    assert dead.reason == "malformed" and dead.message.headers[H_REASON] == "malformed"
    (failed,) = bus.job_failures()
    assert (failed.job_id, failed.stage) == (job, "extractor")
    assert "document_uri: Field required" in failed.reason


async def test_retries_wait_for_their_delay_then_end_in_a_dead_letter(bus: MemoryBus) -> None:
    attempts: list[int] = []

    async def flaky(event: DocumentUploaded, delivery: Delivery) -> None:
        attempts.append(delivery.attempt)
        raise ConnectionError("the source is down")

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, flaky, prefetch=1)
    event = uploaded()
    await bus.publish(event)
    assert attempts == [0] and [r.delay_ms for r in bus.retries] == [10]
    assert await bus.deliver_retries() == 1
    assert await bus.deliver_retries() == 1
    assert await bus.deliver_retries() == 0
    assert attempts == [0, 1, 2]
    assert [(r.attempt, r.delay_ms) for r in bus.retries] == [(1, 10), (2, 20)]
    (dead,) = bus.dead_letters
    assert (dead.reason, dead.attempt) == ("retries-exhausted", 2)
    assert dead.message.headers[H_QUEUE] == bus.topology.queue_name(topology.EXTRACTOR)
    (failed,) = bus.job_failures()
    assert failed.job_id == event.job_id and "dead-letter queue" in failed.reason


async def test_while_the_dependency_is_down_retries_use_no_attempt(bus: MemoryBus) -> None:
    async def failing(event: DocumentUploaded, delivery: Delivery) -> None:
        raise ConnectionError("database restarting")

    async def down() -> bool:
        return True

    bus.dependency_down = down
    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, failing, prefetch=1)
    await bus.publish(uploaded())
    for _ in range(5):
        await bus.deliver_retries()
    assert {r.attempt for r in bus.retries} == {0} and bus.dead_letters == []


async def test_outcomes_and_handling_times_reach_the_hooks(bus: MemoryBus) -> None:
    outcomes: list[tuple[str, str]] = []
    timings: list[str] = []
    bus.on_outcome.append(lambda group, outcome: outcomes.append((group, outcome)))
    bus.on_handled.append(lambda group, seconds: timings.append(group))

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        pass

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    await bus.publish(uploaded())
    await bus.publish_raw(b"garbage", "document.uploaded")
    assert outcomes == [
        ("extractor", "received"),
        ("extractor", "acked"),
        ("extractor", "received"),
        ("extractor", "dead_lettered"),
    ]
    assert timings == ["extractor"]  # the malformed one never reached the handler


async def test_a_broadcast_reaches_its_handler_and_its_failure_is_only_logged(
    bus: MemoryBus,
) -> None:
    cancelled: list[uuid.UUID] = []

    async def kill(event: JobCancelled, delivery: Delivery) -> None:
        cancelled.append(event.job_id)
        raise ProcessLookupError("nothing to kill")

    bus.subscribe_broadcast(JobCancelled, kill)
    job = uuid.uuid4()
    await bus.publish(JobCancelled(job_id=job))
    assert cancelled == [job] and bus.dead_letters == [] and bus.retries == []


async def test_dead_letters_reach_the_recorder_which_may_ask_for_them_again(
    bus: MemoryBus,
) -> None:
    recorded: list[InboundMessage] = []

    async def record(message: InboundMessage) -> None:
        recorded.append(message)

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        pass

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    bus.subscribe_dead_letters(topology.EXTRACTOR, record, prefetch=4)
    await bus.publish_raw(b"not json", "document.uploaded", message_id="m-1")
    (letter,) = recorded
    assert letter.message_id == "m-1" and letter.body == b"not json"
    assert letter.headers[H_REASON] == "malformed" and letter.attempt == 0


def test_topic_matching_follows_amqp() -> None:
    assert topic_matches("#", "page.extracted.chunks")
    assert topic_matches("page.extracted.chunks", "page.extracted.chunks")
    assert not topic_matches("page.extracted.chunks", "page.extracted")
    assert topic_matches("page.*", "page.ocred") and not topic_matches("page.*", "page.a.b")
    assert topic_matches("page.#", "page") and topic_matches("#.chunks", "pages.extracted.chunks")


# --- the analyzer, through its real setup --------------------------------------------------


class FakePool:
    """What the analyzer asks of the database: a job's status, and its analysis options
    (none: the built-in backend)."""

    def __init__(self) -> None:
        self.statuses: dict[uuid.UUID, str] = {}

    async def fetchval(self, query: str, job_id: uuid.UUID) -> str | None:
        assert "SELECT status FROM jobs" in query
        return self.statuses.get(job_id)

    async def fetchrow(self, query: str, job_id: uuid.UUID) -> dict[str, object] | None:
        assert "SELECT tenant, analysis FROM jobs" in query
        return {"tenant": "t", "analysis": None} if job_id in self.statuses else None


@pytest.fixture
def analyzer(tmp_path: Path) -> Iterator[tuple[MemoryBus, FakePool]]:
    clear_job_cache()
    settings = Settings.model_construct(retry_delays_ms=[10])
    bus, pool = MemoryBus(settings, "analyzer"), FakePool()
    # The fake answers only the one query the analyzer makes.
    fake_pool = cast(asyncpg.Pool, pool)
    ctx = ServiceContext("analyzer", settings, bus, fake_pool, BlobStore(tmp_path))
    analyzer_setup(ctx)
    yield bus, pool
    clear_job_cache()


TEXT = "Contact Ada Lovelace at ada@example.com before 10 December 2026 in London."


async def test_the_analyzer_answers_a_page_with_its_chunk_analyses(
    analyzer: tuple[MemoryBus, FakePool],
) -> None:
    bus, pool = analyzer
    job = uuid.uuid4()
    pool.statuses[job] = "processing"
    chunks = make_chunks(job, 3, PageSource.TEXT_LAYER, TEXT, 1000)
    await bus.publish(PageExtracted(job_id=job, page=3, text=TEXT, chunks=chunks), priority=4)
    (answer,) = bus.events(ChunksAnalyzed)
    assert answer.job_id == job and answer.page == 3 and answer.source == PageSource.TEXT_LAYER
    assert [item.chunk for item in answer.items] == chunks
    assert "ada@example.com" in {e.text for item in answer.items for e in item.analysis.entities}
    (published,) = [p for p in bus.published if isinstance(p.event, ChunksAnalyzed)]
    assert published.priority == 4 and published.by_group == "analyzer"
    assert bus.undeclared == []  # it published only what its subscription declares


async def test_the_analyzer_drops_pages_of_an_ended_job(
    analyzer: tuple[MemoryBus, FakePool],
) -> None:
    bus, pool = analyzer
    job = uuid.uuid4()
    pool.statuses[job] = "cancelled"
    chunks = make_chunks(job, 1, PageSource.OCR, TEXT, 1000)
    await bus.publish(PageOcred(job_id=job, page=1, text=TEXT, chunks=chunks))
    assert not (bus.events(ChunksAnalyzed) or bus.dead_letters or bus.retries)


async def test_the_analyzer_takes_no_image_events(analyzer: tuple[MemoryBus, FakePool]) -> None:
    bus, _pool = analyzer
    await bus.publish(ImagesExtracted(job_id=uuid.uuid4(), page=1, images=[]))
    assert bus.events(ChunksAnalyzed) == [] and bus.dead_letters == []


# --- the dead-letter recorder, through its real subscription -------------------------------


class RecordingPool:
    """Answers the recorder's INSERT ... RETURNING id: a new id, or None for a repeat."""

    def __init__(self, *, down: bool = False) -> None:
        self.rows: dict[tuple[str, str, str], int] = {}
        self.down = down

    async def fetchval(self, query: str, *args: Any) -> int | None:
        if self.down:
            raise ConnectionError("database down")
        assert query.lstrip().startswith("INSERT INTO dead_letters")
        key = (args[3], args[1], args[2])  # queue, dedupe key, replay token
        if key in self.rows:
            return None
        self.rows[key] = len(self.rows) + 1
        return self.rows[key]


async def test_the_recorder_keeps_each_dead_letter_once(tmp_path: Path) -> None:
    from services.progress.dead_letter_recorder import subscribe_dead_letter_queues

    settings = Settings.model_construct(retry_delays_ms=[10])
    bus, pool = MemoryBus(settings, "progress"), RecordingPool()
    ctx = ServiceContext("progress", settings, bus, cast(asyncpg.Pool, pool), BlobStore(tmp_path))
    subscribe_dead_letter_queues(ctx)

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        pass

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    job = uuid.uuid4()
    body = f'{{"job_id": "{job}", "password": "s3cret"}}'.encode()
    await bus.publish_raw(body, "document.uploaded", message_id="m-1")
    await bus.publish_raw(body, "document.uploaded", message_id="m-1")  # the same, again
    assert list(pool.rows) == [(bus.topology.queue_name(topology.EXTRACTOR), "m-1", "")]
    assert len(bus.dead_letters) == 2 and len(bus.job_failures()) == 2


async def test_publishing_into_one_queue_reaches_only_that_group(bus: MemoryBus) -> None:
    seen: list[str] = []

    def keeper(group: str) -> Any:
        async def keep(event: DocumentUploaded, delivery: Delivery) -> None:
            seen.append(group)

        return keep

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, keeper("extractor"), prefetch=1)
    bus.subscribe(topology.PROGRESS, DocumentUploaded, keeper("progress"), prefetch=1)
    body = uploaded().model_dump_json().encode()
    await bus.publish_to_queue(
        body,
        bus.topology.queue_name(topology.EXTRACTOR),
        headers={"x-event-type": "document.uploaded"},
    )
    assert seen == ["extractor"]
    await bus.publish_raw(body, "document.uploaded")
    assert seen == ["extractor", "extractor", "progress"]
