"""Every field of every bus event is bounded, so an oversized message is refused when it is
parsed and never stored (a 50 MB filename once reached every job listing)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from shared import bounds, events
from shared.bounds import REASON_MAX
from shared.events import ALL_EVENTS, parse_event


def unbounded(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[str]:
    """Paths of string fields without maxLength and lists without maxItems."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return unbounded(defs[name], defs, f"{path}<{name}>")
    found: list[str] = []
    for key in ("anyOf", "allOf", "oneOf"):
        for i, option in enumerate(schema.get(key, [])):
            found += unbounded(option, defs, f"{path}|{i}")
    kind = schema.get("type")
    fixed = {"enum", "const", "format"} & schema.keys()  # a choice, a uuid, a date-time
    if kind == "string" and not fixed and "maxLength" not in schema:
        found.append(path)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(path)
        found += unbounded(schema.get("items", {}), defs, f"{path}[]")
    for name, prop in schema.get("properties", {}).items():
        found += unbounded(prop, defs, f"{path}.{name}")
    return found


@pytest.mark.parametrize("model", ALL_EVENTS, ids=lambda m: m.routing_key)
def test_every_string_and_list_of_every_event_is_bounded(model: type[events.Event]) -> None:
    schema = model.model_json_schema()
    assert unbounded(schema, schema.get("$defs", {}), model.__name__) == []


def test_the_checker_sees_an_unbounded_field() -> None:
    from pydantic import BaseModel

    class Loose(BaseModel):
        name: str
        tags: list[str]

    schema = Loose.model_json_schema()
    assert unbounded(schema, {}, "Loose") == ["Loose.name", "Loose.tags", "Loose.tags[]"]


def upload_body(**fields: object) -> str:
    return json.dumps({"job_id": str(uuid.uuid4()), "document_uri": "blob://x", **fields})


@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("filename", 255),
        ("tenant", 64),
        ("document_uri", 4096),
        ("content_type", 255),
        ("password_token", bounds.PASSWORD_TOKEN_MAX),
    ],
)
def test_document_uploaded_fields_are_refused_past_their_bound(field: str, limit: int) -> None:
    parse_event("document.uploaded", upload_body(**{field: "a" * limit}))
    with pytest.raises(ValidationError, match=field):
        parse_event("document.uploaded", upload_body(**{field: "a" * (limit + 1)}))


def test_a_50_mb_filename_is_refused() -> None:
    with pytest.raises(ValidationError, match="filename"):
        parse_event("document.uploaded", upload_body(filename="f" * (50 * 1024 * 1024)))


def test_an_empty_tenant_or_address_is_refused() -> None:
    for field in ("tenant", "document_uri"):
        with pytest.raises(ValidationError, match=field):
            parse_event("document.uploaded", upload_body(**{field: ""}))


def test_page_and_chunk_text_are_bounded() -> None:
    job = uuid.uuid4()
    chunk = {
        "chunk_id": str(uuid.uuid4()),
        "page": 1,
        "index": 0,
        "source": "text-layer",
        "start": 0,
        "end": 1,
        "text": "x" * (bounds.CHUNK_TEXT_MAX + 1),
    }
    with pytest.raises(ValidationError, match="text"):
        parse_event("page.extracted", {"job_id": str(job), "page": 1, "chunks": [chunk]})
    with pytest.raises(ValidationError, match="format"):
        parse_event("extraction.accepted", {"job_id": str(job), "format": "p" * 33})
    with pytest.raises(ValidationError, match="pages"):
        page = {"job_id": str(job), "page": 1}
        many = [page] * (bounds.PAGES_PER_MESSAGE_MAX + 1)
        parse_event("pages.extracted", {"job_id": str(job), "pages": many})


def test_a_long_reason_is_cut_to_its_bound_not_refused() -> None:
    """Reporting a failure must never fail: the sentence is shortened instead."""
    job = uuid.uuid4()
    failed = events.JobFailed(job_id=job, stage="extractor", reason="why " * 5000)
    assert len(failed.reason) == REASON_MAX and failed.reason.endswith("…")
    parsed = parse_event("job.failed", failed.model_dump_json())
    assert parsed == failed
    page = events.PageExtracted(job_id=job, page=1, error="e" * (REASON_MAX + 10))
    assert page.error is not None and len(page.error) == REASON_MAX
    short = events.JobFailed(job_id=job, stage="extractor", reason="The PDF is encrypted.")
    assert short.reason == "The PDF is encrypted."


def test_a_configured_tenant_must_fit_the_bus() -> None:
    from shared.settings import Settings

    assert Settings(api_keys="k=" + "t" * 64).tenants_by_key == {"k": "t" * 64}
    with pytest.raises(ValidationError, match="longer than 64 characters"):
        Settings(api_keys="k=" + "t" * 65)
