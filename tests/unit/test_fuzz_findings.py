"""What the fuzzers found (issue 10, item 10), each kept as a regression test: schemathesis
against the OpenAPI documents (tests/integration/test_api_fuzz.py) and the harnesses of
`make fuzz` (tests/fuzz/). Each test names the harness and the input that found it."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from services.ingest.api.errors import install_error_handlers
from services.ingest.json_body import json_body
from services.ingest.multipart import FieldPart, iter_form, text_charset
from shared.api_docs import add_refusals, invalid_request
from shared.chunking import chunk_spans
from shared.sniff import sniff_path, unsupported_reason, zip_problem
from tests.fuzz import fuzz_chunking

# --- schemathesis -------------------------------------------------------------------------


class _Urls(BaseModel):
    urls: list[str]


def _json_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/json")
    async def read(request: Request) -> dict[str, int]:
        body = await json_body(request, _Urls)
        return {"urls": len(body.urls)}

    @app.get("/window")
    async def window() -> None:
        raise invalid_request(("query", "since"), "'since' must be before 'until'.")

    return app


def test_json_body_that_is_not_utf8_is_a_422_not_a_500() -> None:
    """POST /v1/jobs and /v1/batches with Content-Type: application/json and the bytes
    b'\\xfd\\xbfC\\x8d': the validation error carried the raw bytes, and encoding them for
    the 422 raised UnicodeDecodeError (a 500)."""
    client = TestClient(_json_app(), raise_server_exceptions=False)
    response = client.post(
        "/json", content=b"\xfd\xbfC\x8d", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid" and error["loc"] == ["body"]
    assert error["input"] == "\ufffd\ufffdC\ufffd"
    assert client.post("/json", json={"urls": ["https://example.org/"]}).json() == {"urls": 1}


def test_a_check_of_the_route_answers_422_in_the_documented_shape() -> None:
    """GET /v1/usage?since=2000-01-01T00:00:00Z&until=2000-01-01T00:00:00Z answered 422 with
    {"detail": sentence}, where the document promises HTTPValidationError (a list)."""
    response = TestClient(_json_app()).get("/window")
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "value_error",
            "loc": ["query", "since"],
            "msg": "'since' must be before 'until'.",
            "input": None,
        }
    ]


def test_the_documents_declare_the_refusals_of_keys_ids_and_bodies() -> None:
    """Every keyed operation answered 401/403 and every operation naming an id answered 404
    without declaring them (schemathesis' undocumented status codes)."""
    schema = {
        "paths": {
            "/healthz": {"get": {"responses": {"200": {}}}},
            "/v1/jobs/{job_id}": {"get": {"security": [{"apiKey": []}], "responses": {}}},
            "/v1/replay": {
                "post": {"security": [{"apiKey": []}], "requestBody": {}, "responses": {}}
            },
        }
    }
    add_refusals(schema)
    add_refusals(schema)  # idempotent: FastAPI hands back its cached document
    paths = schema["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200"}
    assert set(paths["/v1/jobs/{job_id}"]["get"]["responses"]) == {"401", "403", "404"}
    assert set(paths["/v1/replay"]["post"]["responses"]) == {"400", "401", "403"}
    assert schema["components"]["schemas"]["Problem"]["required"] == ["detail"]


# --- make fuzz: chunking ------------------------------------------------------------------


def test_closing_punctuation_after_a_sentence_end_stays_in_its_chunk() -> None:
    """fuzz_chunking, from a seed: 'a third (quoted.) next' split at sentence ends dropped
    the ')' (the separator matched the closers, and separators are not chunk text)."""
    text = 'One sentence (quoted.) "Two." [Three!] four'
    spans = chunk_spans(text, 12)
    pieces = [text[a:b] for a, b in spans]
    assert "".join(pieces).replace(" ", "") == text.replace(" ", "")
    assert "(quoted.)" in pieces and '"Two."' in pieces and "[Three!]" in pieces


def test_the_chunking_invariants_hold_for_the_input_that_broke_them() -> None:
    data = (
        b"\x00\x10First sentence. Second one! A third?\n\n"
        + '日本語。 (quoted.) "Yes." [end]'.encode()
    )
    fuzz_chunking.target(data)


# --- make fuzz: multipart -----------------------------------------------------------------


async def _one_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


FORM = b'--XyZ\r\nContent-Disposition: form-data; name="ocr"\r\n\r\nauto\r\n--XyZ--\r\n'


@pytest.mark.parametrize("charset", ["utf\x00", "rot13", "hex", "zlib", "no-such-codec"])
async def test_a_charset_that_is_no_text_codec_reads_as_utf8(charset: str) -> None:
    """fuzz_multipart: `charset=utf\\x00` made codecs.lookup raise ValueError, and a bytes
    codec (rot13) made every decode raise LookupError: both escaped as 500s."""
    content_type = f"multipart/form-data; boundary=XyZ; charset={charset}"
    events = [event async for event in iter_form(content_type, _one_chunk(FORM))]
    assert events == [FieldPart("ocr", "auto")]


def test_text_charset_keeps_text_codecs() -> None:
    assert text_charset(b"latin-1") == "iso8859-1"
    assert text_charset(b"UTF-16") == "utf-16"
    assert text_charset(None) == "utf-8"
    assert text_charset(b"rot13") == "utf-8"


# --- make fuzz: sniffer and extractors ----------------------------------------------------


def _zip_claiming_version(version: int) -> bytes:
    """A one-entry ZIP whose central directory says it needs ZIP version `version`/10."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("word/document.xml", "<w:document/>")
    data = bytearray(out.getvalue())
    at = data.find(b"PK\x01\x02")
    data[at + 6 : at + 8] = version.to_bytes(2, "little")  # version needed to extract
    return bytes(data)


def test_a_zip_of_an_unknown_version_is_unsupported_with_a_reason(tmp_path: Path) -> None:
    """fuzz_extractors, from the DOCX seed: a central directory claiming ZIP version 21.6
    made zipfile raise NotImplementedError out of sniff_path (a 500 in ingest, a retried
    and dead-lettered message in the extractor)."""
    path = tmp_path / "upload"
    path.write_bytes(_zip_claiming_version(216))
    with pytest.raises(NotImplementedError):
        zipfile.ZipFile(path)
    assert zip_problem(path) is None
    assert sniff_path(path) is None
    assert unsupported_reason(path).startswith("The file is a ZIP archive but not a readable")
