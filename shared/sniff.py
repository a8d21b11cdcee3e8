"""Decide a document's format from its bytes, never from its name or declared type."""

from __future__ import annotations

import csv
import io
import os
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

from charset_normalizer import from_bytes

IMAGE_FORMATS = frozenset({"png", "jpeg", "tiff"})

_HEAD = 64 * 1024
ZIP_MAGIC = b"PK\x03\x04"
OFFICE_MARKER = "[Content_Types].xml"  # every Office Open XML package has it
DOCX_MAIN_PART = "word/document.xml"

# What a ZIP container may declare before anything opens it (a DOCX of the corpus has ~20
# entries, ~100 KB inflated, at ratios under 10).
ZIP_MAX_ENTRIES = 10_000
ZIP_MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
# Inflated / compressed, for the archive and for any entry over 1 MiB: deflate tops out near
# 1030 (zeros), while very repetitive text XML reaches ~200 (a valid DOCX, tested).
ZIP_MAX_RATIO = 500
_RATIO_MIN_BYTES = 1024 * 1024
# What zipfile raises for a damaged directory. NotImplementedError: a directory entry that
# claims a ZIP version zipfile does not know (found by fuzzing; it was a 500 in ingest).
UNREADABLE_ZIP = (
    zipfile.BadZipFile,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    EOFError,
)


def sniff_bytes(head: bytes, *, zip_names: list[str] | None = None) -> str | None:
    """Format of a document given its first bytes (64 KiB is plenty), or None if unsupported.

    For ZIP containers pass the member names (see sniff_path); without them a ZIP is unsupported.
    The container is judged before any marker inside it: an Office package is Office even
    when `%PDF-` appears in its first KiB (a stored entry can begin with it).
    """
    if not head:
        return None
    if head.startswith(ZIP_MAGIC) and zip_names:
        names = set(zip_names)
        if OFFICE_MARKER in names or DOCX_MAIN_PART in names:
            return "docx" if DOCX_MAIN_PART in names else None  # xlsx, pptx: not supported
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(ZIP_MAGIC):
        return None  # a ZIP that is not an Office package
    return _sniff_text(head)


def _sniff_text(head: bytes) -> str | None:
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    best = from_bytes(head).best()
    if best is None:
        return None
    text = str(best)
    if not text.strip():
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if printable / max(len(text), 1) < 0.95:
        return None
    lowered = text.lstrip("\ufeff \t\r\n")[:2048].lower()
    if lowered.startswith(("<!doctype html", "<html")) or (
        lowered.startswith("<") and ("<body" in lowered or "<head" in lowered)
    ):
        return "html"
    if _looks_like_csv(text):
        return "csv"
    return "txt"


def _looks_like_csv(text: str) -> bool:
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if len(lines) < 2:
        return False
    # The last line of a 64 KiB head may be cut off mid-row.
    sample = "\n".join(lines[:-1] if len(lines) > 2 else lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return False
    rows = list(csv.reader(io.StringIO(sample), dialect))
    widths = [len(r) for r in rows if r]
    if not widths or widths[0] < 2:
        return False
    consistent = sum(w == widths[0] for w in widths) / len(widths)
    return consistent >= 0.9


def sniff_path(path: Path | str) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    names: list[str] | None = None
    if head.startswith(ZIP_MAGIC):
        names = []
        if zip_problem(path) is None:
            try:
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
            except UNREADABLE_ZIP:
                pass
    return sniff_bytes(head, zip_names=names)


def zip_declared_entries(path: Path | str) -> int | None:
    """How many entries a ZIP's end-of-central-directory record declares (ZIP64 included),
    read from its tail without parsing the directory; None when there is no such record."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (65_535 + 22 + 20)))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if entries != 0xFFFF:
        return int(entries)
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator < 0:
        return int(entries)
    (record_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
    with open(path, "rb") as fh:
        fh.seek(record_offset)
        record = fh.read(56)
    if not record.startswith(b"PK\x06\x06") or len(record) < 40:
        return None
    (entries64,) = struct.unpack("<Q", record[32:40])
    return int(entries64)


def zip_sizes_problem(infos: Iterable[zipfile.ZipInfo]) -> str | None:
    """A sentence when the entries' declared sizes make the archive a bomb, else None.
    (zipfile never inflates an entry past its declared size, so these bound what is read.)"""
    total = compressed = 0
    for count, info in enumerate(infos, start=1):
        total += info.file_size
        compressed += info.compress_size
        if count > ZIP_MAX_ENTRIES:
            return f"The ZIP container has more than {ZIP_MAX_ENTRIES} entries."
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > ZIP_MAX_RATIO * max(
            info.compress_size, 1
        ):
            return (
                f"The ZIP container's entry {info.filename[:100]!r} inflates more than "
                f"{ZIP_MAX_RATIO} times (a ZIP bomb?)."
            )
    if total > ZIP_MAX_UNCOMPRESSED_BYTES:
        limit = ZIP_MAX_UNCOMPRESSED_BYTES // (1024 * 1024)
        return f"The ZIP container inflates to more than {limit} MB."
    if total > _RATIO_MIN_BYTES and total > ZIP_MAX_RATIO * max(compressed, 1):
        return f"The ZIP container inflates more than {ZIP_MAX_RATIO} times (a ZIP bomb?)."
    return None


def zip_problem(path: Path | str) -> str | None:
    """Why a ZIP container must not be opened (entry count, inflated size, ratio), or None.
    The entry count is read first from the archive's last bytes, so a directory of millions
    of entries is refused before zipfile parses it."""
    try:
        declared = zip_declared_entries(path)
        if declared is not None and declared > ZIP_MAX_ENTRIES:
            return f"The ZIP container has more than {ZIP_MAX_ENTRIES} entries."
        with zipfile.ZipFile(path) as zf:
            return zip_sizes_problem(zf.infolist())
    except UNREADABLE_ZIP:
        return None  # not a readable ZIP: whoever opens it says so


MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "html": "text/html",
    "csv": "text/csv",
    "txt": "text/plain",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
UNSUPPORTED_REASON = (
    "This file type is not supported (judged by its content); supported types are: "
    "PDF, DOCX, HTML, CSV, TXT, PNG, JPEG, TIFF."
)


def unsupported_reason(path: Path | str) -> str:
    """A sentence saying why a file that sniffs as unsupported cannot be processed."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        return "The document is empty (0 bytes)."
    if head == _OLE_MAGIC:
        # Password-protected OOXML and legacy .doc/.xls share this container.
        return (
            "This is an encrypted or legacy (pre-2007) Office file, which is not supported; "
            "remove the password or save it as DOCX or PDF."
        )
    if head.startswith(ZIP_MAGIC):
        problem = zip_problem(path)
        if problem is not None:
            return problem
        return (
            "The file is a ZIP archive but not a readable Word document "
            "(it may be damaged or truncated, or be another Office format)."
        )
    return UNSUPPORTED_REASON
