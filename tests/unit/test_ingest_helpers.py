"""Pure helpers of the ingest service: filenames, cursors, the streaming form parser, the blob
writer, the read timeout and the upload cap, the error-to-HTTP mapping, Idempotency-Key replays
and the outbox relay's backoff."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.ingest import outbox
from services.ingest.api.errors import error_response, status_of
from services.ingest.errors import (
    EmptyUpload,
    FilenameTooLong,
    IdempotencyConflict,
    IngestError,
    JobAlreadyEnded,
    JobNotFound,
    MissingFile,
    NoTenant,
    TooManyUploads,
    UnsupportedFormat,
    UploadInterrupted,
    UploadRejected,
    UploadTimedOut,
    UploadTooLarge,
    human_bytes,
)
from services.ingest.filenames import MAX_FILENAME_CHARS, filename_length, sanitize_filename
from services.ingest.limits import UploadSlots
from services.ingest.middleware import request_id_from
from services.ingest.models import UploadOptions
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
from services.ingest.submit import UploadRequest, refuse_unreadable_body, replay
from services.ingest.upload import ReceivedUpload, receive_upload, with_read_timeout
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


# --- overlong file names --------------------------------------------------------------------


def test_filename_length_counts_the_kept_basename() -> None:
    assert filename_length("C:\\Users\\ann\\" + "d" * 300 + "\\a.pdf") == len("a.pdf")
    assert filename_length("x" * 300 + ".pdf") == 304
    assert filename_length(None) == 0


async def test_receive_upload_refuses_an_overlong_name_before_storing(tmp_path) -> None:
    body = form_body({}, [("file", "n" * (MAX_FILENAME_CHARS + 1) + ".pdf", b"%PDF-1.4")])
    with pytest.raises(FilenameTooLong) as raised:
        await receive_upload(CTYPE, stream_of(body, 100), BlobStore(tmp_path), 1000)
    assert "at most 255 characters" in raised.value.detail
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # Exactly at the limit is fine.
    body = form_body({}, [("file", "n" * (MAX_FILENAME_CHARS - 4) + ".pdf", b"%PDF-1.4")])
    assert await receive_upload(CTYPE, stream_of(body), BlobStore(tmp_path), 1000) is not None


async def test_a_header_beyond_any_filename_gets_a_sentence() -> None:
    body = form_body({}, [("file", "n" * 40_000 + ".pdf", b"%PDF-1.4")])
    with pytest.raises(MultipartError, match="at most 255 characters"):
        _ = [e async for e in iter_form(CTYPE, stream_of(body, 65536))]


# --- stalled bodies and the per-tenant cap --------------------------------------------------


async def test_a_stalled_body_times_out() -> None:
    async def two_chunks_then_silence() -> AsyncIterator[bytes]:
        yield b"one"
        yield b"two"
        await asyncio.Event().wait()  # a client that stops sending
        yield b"never"

    seen = []
    with pytest.raises(UploadTimedOut, match="sent nothing for 0.05 seconds"):
        async for chunk in with_read_timeout(two_chunks_then_silence(), 0.05):
            seen.append(chunk)
    assert seen == [b"one", b"two"]


async def test_a_steady_body_is_read_whole() -> None:
    chunks = [c async for c in with_read_timeout(stream_of(b"x" * 100, 10), 0.05)]
    assert b"".join(chunks) == b"x" * 100


def test_upload_slots_cap_each_tenant_and_free_on_exit() -> None:
    slots = UploadSlots(per_tenant=2)
    with slots.hold("a"), slots.hold("a"):
        with pytest.raises(TooManyUploads) as refused, slots.hold("a"):
            pass
        assert refused.value.retry_after_seconds >= 1
        with slots.hold("b"):  # another tenant is not affected
            assert slots.in_use("b") == 1
        assert slots.in_use("a") == 2
    assert slots.in_use("a") == 0
    with pytest.raises(RuntimeError), slots.hold("a"):
        raise RuntimeError("the upload failed")
    assert slots.in_use("a") == 0  # freed whatever happened


# --- domain errors to HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NoTenant(), 403),
        (JobNotFound(), 404),
        (JobAlreadyEnded("completed"), 409),
        (UploadRejected("Send one file per request."), 400),
        (UploadInterrupted(), 400),
        (EmptyUpload(), 400),
        (UploadTooLarge(1000), 413),
        (UnsupportedFormat("Not a document."), 415),
        (UploadTimedOut(30), 408),
        (TooManyUploads(4, 1), 429),
        (MissingFile(), 422),
        (FilenameTooLong(300), 422),
        (IdempotencyConflict(uuid.UUID(int=1)), 422),
        (IngestError("Anything else refused."), 400),
    ],
)
def test_each_error_has_its_status(error: IngestError, status: int) -> None:
    assert status_of(error) == status
    assert error_response(error).status_code == status


def test_error_bodies_keep_the_api_shapes() -> None:
    body = json.loads(error_response(EmptyUpload()).body)
    assert body == {"detail": "The uploaded file is empty."}
    # Every 422 has FastAPI's validation-error shape, with a sentence as msg.
    body = json.loads(error_response(IdempotencyConflict(uuid.UUID(int=1))).body)
    [item] = body["detail"]
    assert item["loc"] == ["header", "idempotency-key"] and item["type"] == "idempotency_conflict"
    assert "different file or options" in item["msg"]
    assert json.loads(error_response(MissingFile()).body)["detail"][0]["loc"] == ["body", "file"]
    # A refused client learns when to come back; a stalled one's connection is not reused.
    assert error_response(TooManyUploads(4, 1)).headers["retry-after"] == "1"
    assert error_response(UploadTimedOut(30)).headers["connection"] == "close"


def test_a_body_refused_before_reading() -> None:
    def request(ctype: str | None, length: str | None) -> UploadRequest:
        return UploadRequest("t", ctype, length, stream_of(b""))

    with pytest.raises(MissingFile):
        refuse_unreadable_body(request("application/json", "10"), 1000)
    with pytest.raises(UploadTooLarge):
        refuse_unreadable_body(request(CTYPE, str(1000 + 65 * 1024)), 1000)
    refuse_unreadable_body(request(CTYPE, "1000"), 1000)  # within the multipart slack


# --- Idempotency-Key replays ----------------------------------------------------------------


def test_a_replayed_key_needs_the_same_bytes_and_options() -> None:
    digest = hashlib.sha256(b"doc").hexdigest()
    existing: dict[str, Any] = {
        "job_id": uuid.UUID(int=7), "status": "processing", "filename": "a.pdf",
        "format": "pdf", "size_bytes": 3, "sha256": digest, "ocr_mode": "auto", "priority": 0,
        "ocr_lang": None, "docx_comments": False, "pdf_tables": None,
    }  # fmt: skip
    upload = ReceivedUpload(f"blob://sha256/{digest}", 3, "renamed.pdf", None)
    job = replay(existing, upload, UploadOptions())
    assert job.job_id == uuid.UUID(int=7) and not job.created and job.filename == "a.pdf"
    with pytest.raises(IdempotencyConflict):
        replay(existing, upload, UploadOptions(priority=5))
    with pytest.raises(IdempotencyConflict):
        replay(existing, upload, UploadOptions(ocr="never"))
    with pytest.raises(IdempotencyConflict):
        replay(existing, upload, UploadOptions(ocr_lang="deu"))
    with pytest.raises(IdempotencyConflict):
        replay(existing, upload, UploadOptions(docx_comments=True))
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(IdempotencyConflict):
        different = ReceivedUpload(f"blob://sha256/{other}", 5, "a.pdf", None)
        replay(existing, different, UploadOptions())


# --- the outbox relay's backoff -------------------------------------------------------------


async def test_the_relay_backs_off_while_publishing_fails_and_recovers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    async def relay_once(*_args: Any, batch: int) -> int:
        calls.append(loop.time())
        if len(calls) <= 3:
            raise ConnectionError("broker away")
        if len(calls) == 5:
            raise asyncio.CancelledError  # the service stops
        return 0

    monkeypatch.setattr(outbox, "relay_once", relay_once)
    with pytest.raises(asyncio.CancelledError):
        await outbox.run_relay(None, None, interval=0.05)  # type: ignore[arg-type]
    assert len(calls) == 5  # failures are retried, and polling goes on after a success
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    # 0.1, 0.2, 0.4 s after each failure (interval * 2, 4, 8), then back to the interval.
    assert gaps[0] > 0.09 and gaps[1] > 0.19 and gaps[2] > 0.39
    assert gaps[3] < gaps[2]
