"""Reading dead letters leniently, and the headers a replay carries."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid

import pytest

from services.progress.dead_letter_recorder import H_REPLAY, describe_dead_letter, jsonable
from services.progress.dead_letters import queue_filter, replay_headers
from shared.topology import Topology

JOB = uuid.UUID("3b0c4a57-3f39-4d8a-9d5e-1f2a3b4c5d6e")


def test_bus_dead_letter_is_described_from_its_headers() -> None:
    body = json.dumps({"job_id": str(JOB), "page": 2, "images": []}).encode()
    headers = {
        "x-event-type": "images.extracted",
        "x-attempt": 3,
        "x-dead-letter-reason": "retries-exhausted",
        "x-error": "ConnectionError: boom",
        "x-original-queue": "docpipe.ocr",
        "x-correlation-id": "req-1",
    }
    letter = describe_dead_letter(body, headers, message_id="m-1", default_queue="docpipe.x")
    assert letter.queue == "docpipe.ocr"
    assert letter.routing_key == "images.extracted"
    assert letter.reason == "retries-exhausted"
    assert letter.error == "ConnectionError: boom"
    assert letter.attempts == 3
    assert letter.job_id == JOB
    assert letter.payload == {"job_id": str(JOB), "page": 2, "images": []}
    assert letter.body == body
    assert letter.dedupe_key == "m-1" and letter.replay_token == ""


def test_broker_dead_letter_uses_x_death() -> None:
    headers = {
        "x-death": [
            {
                "count": 1,
                "reason": "rejected",
                "queue": "docpipe.analyzer",
                "time": dt.datetime(2024, 5, 1, tzinfo=dt.UTC),
                "exchange": "docpipe",
                "routing-keys": [b"chunks.analyzed"],
            }
        ]
    }
    letter = describe_dead_letter(b"not json", headers, message_id=None, default_queue="q")
    assert letter.queue == "docpipe.analyzer"
    assert letter.reason == "rejected"
    assert letter.routing_key == "chunks.analyzed"
    assert letter.attempts == 1
    assert letter.job_id is None and letter.payload is None
    assert letter.dedupe_key == "sha256:" + hashlib.sha256(b"not json").hexdigest()
    assert letter.headers["x-death"][0]["time"] == "2024-05-01T00:00:00+00:00"


def test_job_id_is_parsed_leniently() -> None:
    for body in (b'{"job_id": "nope"}', b"[1, 2]", b'{"job_id": 7}', b"\xff\xfe"):
        letter = describe_dead_letter(body, {}, message_id="m", default_queue="docpipe.progress")
        assert letter.job_id is None
        assert letter.queue == "docpipe.progress" and letter.reason == "unknown"


@pytest.mark.parametrize("routing_key", ["document.uploaded", "page.extracted", ""])
def test_document_password_is_stripped_from_payload_and_body(routing_key: str) -> None:
    """Sealed or (from a publisher that missed the contract) in clear, whatever the routing
    key claims: neither rests in the dead letter."""
    body = json.dumps(
        {
            "job_id": str(JOB),
            "document_uri": "blob://sha256/ab",
            "password": "s3cret",
            "password_token": "gAAAAAsealed",
        }
    ).encode()
    letter = describe_dead_letter(
        body, {"x-event-type": routing_key}, message_id="m", default_queue="q"
    )
    assert "password" not in letter.payload and "password_token" not in letter.payload
    assert b"s3cret" not in letter.body and b"sealed" not in letter.body
    assert json.loads(letter.body) == {"job_id": str(JOB), "document_uri": "blob://sha256/ab"}


def test_values_postgres_cannot_hold_are_cleaned() -> None:
    body = b'{"job_id": "x", "text": "a\\u0000b\\ud800c"}'
    letter = describe_dead_letter(
        body, {"x-error": "bad\x00byte"}, message_id="m", default_queue="q"
    )
    assert letter.payload["text"] == "ab?c"
    assert letter.error == "badbyte"
    assert letter.body == body  # replayed exactly as it came
    assert jsonable({"k": b"\xff\x00"}) == {"k": "base64:/wA="}


def test_replay_token_is_kept_from_the_headers() -> None:
    letter = describe_dead_letter(b"{}", {H_REPLAY: "12.2"}, message_id="m", default_queue="q")
    assert letter.replay_token == "12.2"


def test_replay_resets_the_delivery_headers() -> None:
    stored = {
        "x-event-type": "page.ocred",
        "x-correlation-id": "req-9",
        "x-attempt": 3,
        "x-error": "boom",
        "x-dead-letter-reason": "retries-exhausted",
        "x-original-queue": "docpipe.progress",
        "x-death": [],
        "x-first-death-queue": "docpipe.progress",
        H_REPLAY: "4.1",
    }
    assert replay_headers(stored, "page.ocred", "4.2") == {
        "x-event-type": "page.ocred",
        "x-correlation-id": "req-9",
        H_REPLAY: "4.2",
    }


def test_queue_filter_takes_a_group_name() -> None:
    topo = Topology("docpipe", (1000,))
    assert queue_filter(topo, "ocr") == "docpipe.ocr"
    assert queue_filter(topo, "docpipe.ocr") == "docpipe.ocr"
    assert queue_filter(topo, None) is None
