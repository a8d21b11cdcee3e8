"""The byte sniffer (shared/sniff.py): any bytes get a supported format or None, and a file
that sniffs as None gets a sentence, never an exception. Seeds: a few bytes of each format
and small ZIPs (a DOCX-like package, a bare one)."""

from __future__ import annotations

import io
import os
import sys
import tempfile
import zipfile

from tests.fuzz.runner import instrumented, main

with instrumented():
    from shared import sniff

SCRATCH = tempfile.NamedTemporaryFile(prefix="fuzz-sniff-", delete=False)  # noqa: SIM115


def target(data: bytes) -> None:
    fmt = sniff.sniff_bytes(data)
    assert fmt is None or fmt in sniff.MEDIA_TYPES, fmt
    # The path functions read the file (ZIP directories included), as ingest and the
    # extractor call them on a stored upload.
    with open(SCRATCH.name, "wb") as fh:
        fh.write(data)
    fmt = sniff.sniff_path(SCRATCH.name)
    assert fmt is None or fmt in sniff.MEDIA_TYPES, fmt
    if fmt is None:
        reason = sniff.unsupported_reason(SCRATCH.name)
        assert isinstance(reason, str) and reason.endswith("."), reason


def _zip(names: list[str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            zf.writestr(name, f"<x>{name}</x>")
    return out.getvalue()


def seeds() -> list[bytes]:
    return [
        b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n%%EOF\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"\xff\xd8\xff\xe0\x00\x10JFIF",
        b"II*\x00\x08\x00\x00\x00",
        b"<!doctype html><html><body><p>hi</p></body></html>",
        b"a,b,c\n1,2,3\n4,5,6\n",
        b"plain text, a sentence. Another one.\n",
        "caf\u00e9 na\u00efve \u65e5\u672c".encode("utf-16"),
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        _zip(["[Content_Types].xml", "word/document.xml"]),
        _zip(["[Content_Types].xml", "xl/workbook.xml"]),
        _zip(["a.txt"]),
    ]


if __name__ == "__main__":
    try:
        sys.exit(main("sniff", target, seeds))
    finally:
        os.unlink(SCRATCH.name)
