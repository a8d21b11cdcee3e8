"""Decide a document's format from its bytes, never from its name or declared type."""

from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

from charset_normalizer import from_bytes

SUPPORTED = ("pdf", "docx", "html", "csv", "txt", "png", "jpeg", "tiff")
IMAGE_FORMATS = frozenset({"png", "jpeg", "tiff"})

_HEAD = 64 * 1024


def sniff_bytes(head: bytes, *, zip_names: list[str] | None = None) -> str | None:
    """Format of a document given its first bytes (64 KiB is plenty), or None if unsupported.

    For ZIP containers pass the member names (see sniff_path); without them a ZIP is unsupported.
    """
    if not head:
        return None
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"PK\x03\x04"):
        names = zip_names or []
        if "word/document.xml" in names:
            return "docx"
        return None
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
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            names = []
    return sniff_bytes(head, zip_names=names)


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
    if head.startswith(b"PK\x03\x04"):
        return (
            "The file is a ZIP archive but not a readable Word document "
            "(it may be damaged or truncated, or be another Office format)."
        )
    return UNSUPPORTED_REASON
