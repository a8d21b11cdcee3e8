"""The event contract: models, routing keys, deterministic ids, and the AsyncAPI document."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared import events
from shared.asyncapi import build_spec
from shared.settings import Settings, parse_key_map
from shared.topology import GROUPS, Topology

DOCS = Path(__file__).resolve().parents[2] / "docs"


class TestEventModels:
    def test_routing_keys_are_unique_and_include_the_required_ones(self) -> None:
        keys = [e.routing_key for e in events.ALL_EVENTS]
        assert len(keys) == len(set(keys))
        assert {"document.uploaded", "images.extracted", "chunks.analyzed"} <= set(keys)

    def test_message_ids_are_deterministic_per_logical_event(self) -> None:
        job = uuid.uuid4()
        a = events.PageExtracted(job_id=job, page=3, text="x")
        b = events.PageExtracted(job_id=job, page=3, text="x")  # a redelivery, later
        c = events.PageExtracted(job_id=job, page=4, text="x")
        assert a.message_id() == b.message_id()
        assert a.message_id() != c.message_id()
        assert events.PageOcred(job_id=job, page=3).message_id() != a.message_id()

    def test_chunk_ids_derive_from_job_page_source_and_index(self) -> None:
        job = uuid.uuid4()
        first = events.Chunk.make_id(job, 1, events.PageSource.OCR, 0)
        assert first == events.Chunk.make_id(job, 1, events.PageSource.OCR, 0)
        assert first != events.Chunk.make_id(job, 1, events.PageSource.TEXT_LAYER, 0)

    def test_only_page_events_with_chunks_are_routed_to_the_analyzer(self) -> None:
        job = uuid.uuid4()
        chunk = events.Chunk(
            chunk_id=events.Chunk.make_id(job, 1, events.PageSource.OCR, 0),
            page=1, index=0, source=events.PageSource.OCR, start=0, end=2, text="hi",
        )  # fmt: skip
        scan = events.PageExtracted(job_id=job, page=1, ocr_pending=True)
        ocred = events.PageOcred(job_id=job, page=1, text="hi", chunks=[chunk])
        assert scan.route == "page.extracted"
        assert ocred.route == "page.ocred.chunks"
        assert events.DocumentUploaded(job_id=job, document_uri="x").route == "document.uploaded"
        analyzer_keys = {k for g in GROUPS if g.name == "analyzer" for k in g.binding_keys}
        assert scan.route not in analyzer_keys and ocred.route in analyzer_keys
        # The extended key still names the event type.
        assert events.parse_event(ocred.route, ocred.model_dump_json()) == ocred
        with pytest.raises(KeyError):
            events.parse_event("page.unknown.chunks", b"{}")

    def test_a_batch_of_pages_belongs_to_one_job_and_routes_by_its_chunks(self) -> None:
        job = uuid.uuid4()
        blank = events.PageExtracted(job_id=job, page=2, ocr_pending=True)
        batch = events.PagesExtracted(job_id=job, pages=[blank])
        assert batch.route == "pages.extracted" and batch.chunks == []
        with pytest.raises(ValidationError):
            events.PagesExtracted(
                job_id=job, pages=[events.PageExtracted(job_id=uuid.uuid4(), page=1)]
            )
        with pytest.raises(ValidationError):
            events.PagesExtracted(job_id=job, pages=[])

    def test_batch_size_is_about_two_percent_of_a_long_document(self) -> None:
        from services.extractor.service import batch_size

        assert [batch_size(n, 32) for n in (1, 10, 99, 100, 150, 500, 5000)] == [
            1, 1, 1, 2, 3, 10, 32,
        ]  # fmt: skip

    def test_round_trip_through_json(self) -> None:
        event = events.DocumentUploaded(
            job_id=uuid.uuid4(), document_uri="blob://sha256/" + "a" * 64
        )
        parsed = events.parse_event("document.uploaded", event.model_dump_json())
        assert parsed == event

    @pytest.mark.parametrize(
        "body",
        [
            b"not json",
            b'{"job_id": "not-a-uuid", "document_uri": "x"}',
            b'{"job_id": "%s", "page": 0}',
        ],
    )
    def test_malformed_bodies_are_rejected(self, body: bytes) -> None:
        if b"%s" in body:
            body = body.replace(b"%s", str(uuid.uuid4()).encode())
            key = "page.extracted"
        else:
            key = "document.uploaded"
        with pytest.raises(ValidationError):
            events.parse_event(key, body)

    def test_unknown_fields_and_versions_are_rejected(self) -> None:
        job = str(uuid.uuid4())
        with pytest.raises(ValidationError):
            events.parse_event(
                "job.failed", {"job_id": job, "stage": "x", "reason": "y", "extra": 1}
            )
        with pytest.raises(ValidationError):
            events.parse_event(
                "job.failed", {"job_id": job, "stage": "x", "reason": "y", "version": 2}
            )

    def test_unknown_routing_key(self) -> None:
        with pytest.raises(KeyError):
            events.parse_event("no.such.event", b"{}")


class TestTopology:
    def test_every_work_queue_dead_letters_to_its_own_dlq(self) -> None:
        topo = Topology("dp", (1000, 10000))
        for group in GROUPS:
            queue = topo.work_queue(group)
            assert queue.durable
            assert queue.arguments["x-dead-letter-exchange"] == "dp.dlx"
            assert queue.arguments["x-dead-letter-routing-key"] == group.name
            assert queue.binding_keys == group.binding_keys
            assert topo.dead_letter_queue(group).name == f"dp.{group.name}.dlq"
            assert topo.dead_letter_queue(group).binding_keys == (group.name,)

    def test_retry_queues_wait_then_return_to_the_work_queue_only(self) -> None:
        topo = Topology("dp", (1000, 10000))
        retry = topo.retry_queue(GROUPS[0], 10000)
        assert {
            "x-message-ttl": 10000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"dp.{GROUPS[0].name}",
        }.items() <= retry.arguments.items()


class TestSettings:
    def test_api_keys_map_to_tenants(self) -> None:
        assert parse_key_map("a=t1, b=t2") == {"a": "t1", "b": "t2"}
        with pytest.raises(ValueError):
            parse_key_map("broken")

    def test_environment_overrides(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DOCPIPE_AMQP_URL", "amqp://x/")
        monkeypatch.setenv("DOCPIPE_RETRY_DELAYS_MS", "[5, 6]")
        settings = Settings()
        assert settings.amqp_url == "amqp://x/"
        assert settings.retry_delays_ms == [5, 6]


def test_checked_in_asyncapi_document_is_current() -> None:
    checked_in = json.loads((DOCS / "asyncapi.json").read_text())
    assert checked_in == build_spec(), "regenerate: python -m shared.asyncapi > docs/asyncapi.json"


def test_asyncapi_describes_what_the_services_really_subscribe() -> None:
    spec = build_spec()
    channels = spec["channels"]
    # Consumers: one channel per binding of each group, from the services' own setup.
    analyzer = channels["analyzer:page.ocred.chunks"]
    assert analyzer["address"] == "page.ocred.chunks"
    assert analyzer["bindings"]["amqp"]["queue"]["name"] == "docpipe.analyzer"
    assert "handles: page.extracted, pages.extracted, page.ocred" in analyzer["description"]
    assert "handles: document.uploaded" in channels["extractor"]["description"]
    # Every service process gets the cancel broadcast; progress records every group's DLQ.
    for service in ("ingest", "extractor", "ocr", "analyzer", "progress"):
        assert f"{service}:broadcast:job.cancelled" in channels
    assert {f"dead-letters:{g.name}" for g in GROUPS} <= set(channels)
    # Publishers: what each subscription declares, job.failed for every consuming group.
    published = {name for name in channels if name.split(":")[-1] in events.EVENTS_BY_KEY}
    assert {"ocr:page.ocred", "ocr:job.failed", "analyzer:chunks.analyzed"} <= published
    assert {"progress:job.completed", "ingest:document.uploaded"} <= published
