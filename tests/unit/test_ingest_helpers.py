"""Pure helpers of the ingest service: filenames, cursors, the streaming form parser and the
blob writer."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.filenames import sanitize_filename
from services.ingest.middleware import request_id_from
from services.ingest.multipart import (
    FieldPart,
    FileData,
    FileEnd,
    FileStart,
    MultipartError,
    boundary_of,
    iter_form,
)
from services.ingest.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.ingest.upload import UploadRejected, UploadTooLarge, human_bytes, receive_upload
from shared.blobstore import BlobStore

# --- filenames ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ann\\Q1 report.docx", "Q1 report.docx"),
        ("/abs/path/to/file.txt", "file.txt"),
        ("evil\x00name\x1f.pdf", "evilname.pdf"),
        ("new\nline\r.csv", "newline.csv"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override removed
        ('a:b*c?d"e<f>g|h.pdf', "abcdefgh.pdf"),
        ("  spaced   out  .pdf  ", "spaced out .pdf"),
        ("..", None),
        ("...", None),
        ("", None),
        (None, None),
        ("\x01\x02", None),
        ("dir/", None),
        ("re\u0301sume\u0301.pdf", "r\u00e9sum\u00e9.pdf"),  # NFC
    ],
)
def test_sanitize_filename(raw: str | None, expected: str | None) -> None:
    assert sanitize_filename(raw) == expected


def test_sanitize_filename_truncates_keeping_extension() -> None:
    name = sanitize_filename("x" * 400 + ".pdf")
    assert name is not None
    assert len(name) == 255
    assert name.endswith(".pdf")
    no_ext = sanitize_filename("y" * 300)
    assert no_ext == "y" * 255


# --- cursors --------------------------------------------------------------------------------


def test_cursor_round_trip_keeps_microseconds_and_zone() -> None:
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC) + timedelta(0)
    job_id = uuid.uuid4()
    cursor = encode_cursor(at, job_id)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (at, job_id)


@pytest.mark.parametrize(
    "bad",
    [
        "not-base64!!",
        "e30",  # {}
        encode_cursor(datetime(2024, 1, 1, tzinfo=UTC), uuid.uuid4())[:-3],
        "eyJ0IjoiMjAyNC0wMS0wMVQwMDowMDowMCIsImlkIjoiMSJ9",  # naive time, bad uuid
        "W10",  # []
    ],
)
def test_decode_cursor_rejects_garbage(bad: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(bad)


# --- misc -----------------------------------------------------------------------------------


def test_human_bytes() -> None:
    assert human_bytes(10) == "10 bytes"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(100 * 1024 * 1024) == "100.0 MiB"


def test_request_id_keeps_sane_ids_only() -> None:
    assert request_id_from("abc-123_x.y:z") == "abc-123_x.y:z"
    assert len(request_id_from("bad id with spaces")) == 32
    assert len(request_id_from(None)) == 32
    assert len(request_id_from("x" * 129)) == 32


def test_boundary_of() -> None:
    assert boundary_of("multipart/form-data; boundary=abc") == b"abc"
    assert boundary_of("multipart/form-data") is None
    assert boundary_of("application/json") is None
    assert boundary_of(None) is None


# --- streaming form parsing -----------------------------------------------------------------

BOUNDARY = "----docpipe-test-boundary"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def form_body(fields: dict[str, str], files: list[tuple[str, str, bytes]]) -> bytes:
    out = b""
    for name, value in fields.items():
        out += (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        ).encode()
    for name, filename, data in files:
        out += (
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


async def stream_of(body: bytes, chunk: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(body), chunk):
        yield body[i : i + chunk]


async def test_iter_form_streams_fields_and_file_in_small_chunks() -> None:
    payload = bytes(range(256)) * 10 + b"\r\n--not-the-boundary\r\n"
    body = form_body({"ocr": "never", "priority": "3"}, [("file", "a.bin", payload)])
    events = [e async for e in iter_form(CTYPE, stream_of(body))]
    fields = [e for e in events if isinstance(e, FieldPart)]
    assert fields == [FieldPart("ocr", "never"), FieldPart("priority", "3")]
    starts = [e for e in events if isinstance(e, FileStart)]
    assert starts == [FileStart("file", "a.bin", "application/octet-stream")]
    assert b"".join(e.data for e in events if isinstance(e, FileData)) == payload
    assert isinstance(events[-1], FileEnd)


async def test_iter_form_rejects_truncated_body() -> None:
    body = form_body({}, [("file", "a.bin", b"x" * 100)])
    with pytest.raises(MultipartError):
        _ = [e async for e in iter_form(CTYPE, stream_of(body[:-30]))]


async def test_receive_upload_stores_blob(tmp_path) -> None:
    store = BlobStore(tmp_path)
    data = b"%PDF-1.4 hello " * 5000
    body = form_body({"priority": "2"}, [("file", "doc.pdf", data)])
    upload = await receive_upload(CTYPE, stream_of(body, 1000), store, max_bytes=len(data))
    assert upload is not None
    assert upload.size_bytes == len(data)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()
    assert store.read_bytes(upload.uri) == data
    assert upload.fields == {"priority": "2"}
    assert upload.client_filename == "doc.pdf"


async def test_receive_upload_over_limit_leaves_nothing_behind(tmp_path) -> None:
    store = BlobStore(tmp_path)
    body = form_body({}, [("file", "big.txt", b"a" * 50_000)])
    with pytest.raises(UploadTooLarge):
        await receive_upload(CTYPE, stream_of(body, 4096), store, max_bytes=10_000)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


async def test_receive_upload_without_file_part_returns_none(tmp_path) -> None:
    body = form_body({"ocr": "auto"}, [("other", "x.txt", b"ignored")])
    assert await receive_upload(CTYPE, stream_of(body), BlobStore(tmp_path), 1000) is None


async def test_receive_upload_refuses_two_files(tmp_path) -> None:
    body = form_body({}, [("file", "a.txt", b"one"), ("file", "b.txt", b"two")])
    with pytest.raises(UploadRejected):
        await receive_upload(CTYPE, stream_of(body), BlobStore(tmp_path), 1000)
