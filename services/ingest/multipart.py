"""Incremental multipart/form-data parsing: file bytes are handed on as they arrive, so an
upload is never held in memory or spooled twice (Starlette's form parser spools whole files)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 32
# One header line of a part: room for a 255-character file name in any encoding, percent-
# encoded or RFC 2231-encoded, so an overlong name reaches the filename check (a sentence
# naming the limit) instead of the parser's own limit of about 4 KiB.
MAX_HEADER_BYTES = 16 * 1024


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (or breaks a field limit)."""


@dataclass(frozen=True)
class FieldPart:
    name: str
    value: str


@dataclass(frozen=True)
class FileStart:
    name: str
    filename: str
    content_type: str | None


@dataclass(frozen=True)
class FileData:
    data: bytes


@dataclass(frozen=True)
class FileEnd:
    name: str


FormEvent = FieldPart | FileStart | FileData | FileEnd


def boundary_of(content_type: str | None) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, or None for any other type."""
    if not content_type:
        return None
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    boundary = params.get(b"boundary")
    return boundary or None


def text_charset(declared: bytes | None) -> str:
    """The declared charset when Python has a text codec by that name, else UTF-8. (A name
    with a NUL byte made codecs.lookup raise ValueError, and `rot13` is a codec that
    bytes.decode refuses: both were 500s.)"""
    name = (declared or b"utf-8").decode("latin-1")
    try:
        codec = codecs.lookup(name)
    except (LookupError, ValueError):
        return "utf-8"
    # The flag bytes.decode itself checks (CPython's codecs registry marks bytes-to-bytes
    # codecs such as rot13, hex and zlib as not text encodings).
    return codec.name if getattr(codec, "_is_text_encoding", True) else "utf-8"


class _Collector:
    """python-multipart's callbacks are synchronous: collect events, the caller awaits them."""

    def __init__(self, charset: str, max_parts: int = MAX_PARTS) -> None:
        self.charset = charset
        self.max_parts = max_parts
        self.events: list[FormEvent] = []
        self.parts = 0
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name = ""
        self._is_file = False
        self._field = bytearray()
        self.ended = False

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode(self.charset)
        except ValueError:  # UnicodeError, and the idna codec's own errors
            return raw.decode("latin-1")

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_parts:
            raise MultipartError(f"Too many form parts (at most {self.max_parts}).")
        self._headers = {}
        self._field = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header_size()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header_size()

    def _check_header_size(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_HEADER_BYTES:
            raise MultipartError(
                f"A form part has a header longer than {MAX_HEADER_BYTES // 1024} KiB "
                "(a file name may have at most 255 characters)."
            )

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise MultipartError('Every form part needs a Content-Disposition "name".')
        self._name = self._decode(options[b"name"])
        self._is_file = b"filename" in options
        if self._is_file:
            ctype = self._headers.get(b"content-type")
            self.events.append(
                FileStart(
                    self._name,
                    self._decode(options[b"filename"]),
                    ctype.decode("latin-1") if ctype else None,
                )
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.events.append(FileData(bytes(data[start:end])))
            return
        if len(self._field) + (end - start) > MAX_FIELD_BYTES:
            raise MultipartError(f"The form field {self._name!r} is too long.")
        self._field += data[start:end]

    def on_part_end(self) -> None:
        if self._is_file:
            self.events.append(FileEnd(self._name))
        else:
            self.events.append(FieldPart(self._name, self._decode(bytes(self._field))))

    def on_end(self) -> None:
        self.ended = True


async def iter_form(
    content_type: str, stream: AsyncIterator[bytes], max_parts: int = MAX_PARTS
) -> AsyncIterator[FormEvent]:
    """Parse a multipart body incrementally into field, file-start/data/end events."""
    boundary = boundary_of(content_type)
    if boundary is None:
        raise MultipartError("Expected a multipart/form-data body with a boundary.")
    _, params = parse_options_header(content_type)
    collector = _Collector(text_charset(params.get(b"charset")), max_parts)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_end": collector.on_end,
        },
        # A backstop only: _check_header_size speaks first, with a sentence (the parser counts
        # a chunk's header bytes before handing them to the callbacks).
        max_header_size=1024 * 1024,
    )
    async for chunk in stream:
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise MultipartError("The multipart body is malformed.") from exc
        events, collector.events = collector.events, []
        for event in events:
            yield event
    try:
        parser.finalize()
    except FormParserError as exc:
        raise MultipartError("The multipart body is malformed.") from exc
    if not collector.ended:
        raise MultipartError("The multipart body ended early (no closing boundary).")
    for event in collector.events:
        yield event
