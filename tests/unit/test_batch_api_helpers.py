"""The batch API's parts that need no server: URL checks at submit, labels and their filter,
a batch form's fields read as a BatchRequest, and a batch form's files streamed to blobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from services.ingest.batch_upload import receive_batch_form
from services.ingest.batches import batch_request_of_fields, check_urls
from services.ingest.errors import (
    InvalidDocumentUrl,
    InvalidRequest,
    TooManyInBatch,
    UploadTooLarge,
)
from services.ingest.labels import (
    MAX_LABELS,
    InvalidLabelFilter,
    Labels,
    parse_label_filters,
)
from services.ingest.multipart import MAX_PARTS
from services.ingest.urls import filename_of_url, url_problem
from shared.blobstore import BlobStore
from shared.events import OcrMode
from shared.settings import Settings

PORTS = [80, 443]


@pytest.mark.parametrize(
    "url",
    [
        "https://docs.example.com/a.pdf",
        "http://docs.example.com:80/a.pdf",
        "HTTPS://Docs.Example.com/a%20b.pdf?x=1",
    ],
)
def test_fetchable_urls_pass(url: str) -> None:
    assert url_problem(url, PORTS) is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://docs.example.com/a.pdf", "has 'ftp'; only http and https"),
        ("docs.example.com/a.pdf", "has no scheme"),
        ("https:///a.pdf", "has no host name"),
        ("https://docs.example.com:99999/a.pdf", "port or host cannot be read"),
        ("https://docs.example.com:8443/a.pdf", "uses port 8443; allowed ports are 80, 443"),
        ("https://me:secret@docs.example.com/a.pdf", "carries credentials"),
        ("https://docs.example.com/" + "x" * 4100, "at most 4096"),
    ],
)
def test_unfetchable_urls_are_named_with_the_reason(url: str, said: str) -> None:
    problem = url_problem(url, PORTS)
    assert problem is not None and said in problem


def test_a_trusted_network_lifts_the_port_rule() -> None:
    assert url_problem("http://intranet:8080/a.pdf", PORTS, allow_any_port=True) is None


def test_filename_of_url() -> None:
    assert filename_of_url("https://x.org/reports/Q3%20report.pdf?dl=1") == "Q3 report.pdf"
    assert filename_of_url("https://x.org/") is None


def test_check_urls_counts_and_points_at_the_bad_one() -> None:
    settings = Settings.model_construct(
        batch_max_urls=2, fetch_allowed_ports=PORTS, allow_private_urls=False
    )
    with pytest.raises(TooManyInBatch, match="at most 2 URLs"):
        check_urls(["https://a.org/1", "https://a.org/2", "https://a.org/3"], settings, ("u",))
    with pytest.raises(InvalidDocumentUrl) as refused:
        check_urls(["https://a.org/1", "gopher://a.org/2"], settings, ("body", "urls"))
    assert refused.value.errors[0]["loc"] == ("body", "urls", "1")


def test_labels_are_bounded() -> None:
    adapter: TypeAdapter[dict[str, str]] = TypeAdapter(Labels)
    assert adapter.validate_python('{"project": "alpha"}') == {"project": "alpha"}
    assert adapter.validate_python("") == {}
    for bad, said in [
        ("[1, 2]", "valid dictionary"),
        ("{not json", "JSON object"),
        ({"bad key": "x"}, "label key"),
        ({"k": "v" * 257}, "longer than 256"),
        ({f"k{i}": "v" for i in range(MAX_LABELS + 1)}, f"at most {MAX_LABELS} labels"),
    ]:
        with pytest.raises(ValidationError, match=said):
            adapter.validate_python(bad)


def test_label_filters() -> None:
    assert parse_label_filters(["a:1", "b:x:y"]) == {"a": "1", "b": "x:y"}
    assert parse_label_filters([]) == {}
    for bad in ("nocolon", ":v", "bad key:v"):
        with pytest.raises(InvalidLabelFilter):
            parse_label_filters([bad])


def test_batch_form_fields() -> None:
    body = batch_request_of_fields(
        {
            "name": "folder",
            "labels": '{"dealer": "7"}',
            "urls": "https://a.org/1.pdf\n\n  https://a.org/2.pdf  \n",
            "priority": "4",
            "ocr": "always",
            "password": "",
            "unrelated": "ignored",
        }
    )
    assert body.urls == ["https://a.org/1.pdf", "https://a.org/2.pdf"]
    assert body.labels == {"dealer": "7"} and body.name == "folder"
    assert (body.options.priority, body.options.ocr) == (4, OcrMode.ALWAYS)
    assert body.options.password is None
    as_json = batch_request_of_fields({"urls": '["https://a.org/x.pdf"]'})
    assert as_json.urls == ["https://a.org/x.pdf"]
    with pytest.raises(InvalidRequest) as refused:
        batch_request_of_fields({"priority": "12"})
    assert refused.value.errors[0]["loc"] == ("body", "options", "priority")


def _form(parts: list[tuple[str, tuple[str, bytes]]], data: dict[str, str]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/v1/batches", files=parts, data=data)
    return request.headers["content-type"], request.read()


async def _chunks(body: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_a_batch_form_may_carry_more_parts_than_a_single_upload(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    parts = [("files", (f"{i}.txt", f"document {i}\n".encode())) for i in range(MAX_PARTS + 8)]
    parts.append(("other", ("ignored.bin", b"not a batch file")))
    content_type, body = _form(parts, {"name": "many"})
    form = await receive_batch_form(
        content_type, _chunks(body), store, max_bytes=1000, max_files=MAX_PARTS + 8
    )
    assert [f.client_filename for f in form.files] == [f"{i}.txt" for i in range(MAX_PARTS + 8)]
    assert form.fields == {"name": "many"}
    assert store.local_path(form.files[3].uri).read_bytes() == b"document 3\n"
    assert form.files[3].size_bytes == len(b"document 3\n")


async def test_a_batch_form_refuses_a_file_too_many_or_too_large(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    content_type, body = _form([("files", (f"{i}.txt", b"x")) for i in range(3)], {})
    with pytest.raises(TooManyInBatch, match="at most 2 files"):
        await receive_batch_form(content_type, _chunks(body), store, max_bytes=10, max_files=2)
    content_type, body = _form([("files", ("big.txt", b"x" * 50))], {})
    with pytest.raises(UploadTooLarge):
        await receive_batch_form(content_type, _chunks(body), store, max_bytes=10, max_files=2)
    assert not list(tmp_path.rglob(".incoming-*"))  # no partial blob left
