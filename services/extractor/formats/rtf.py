"""RTF: the text by striprtf (groups that are not text, such as font tables, pictures and
fields' instructions, are skipped), the title, author, subject and dates from the \\info
group; one page (RTF has no fixed pagination)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.extractor.formats import Record, check_chars
from services.extractor.formats.containers import clean_meta
from services.extractor.normalize import normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    meta_record,
    page_record,
)

_INFO_TEXT = re.compile(rb"\{\\(title|author|subject|operator)\s+([^{}\\]*)\}")
_INFO_DATE = re.compile(rb"\{\\(creatim|revtim)((?:\\(?:yr|mo|dy|hr|min|sec)\d+\s*)+)\}")
_DATE_PART = re.compile(rb"\\(yr|mo|dy|hr|min|sec)(\d+)")
# The \info group sits near the start; only this much is searched for it.
_INFO_WINDOW = 256 * 1024


def rtf_metadata(data: bytes) -> DocumentMeta:
    head = data[:_INFO_WINDOW]
    raw: dict[str, Any] = {}
    for key, value in _INFO_TEXT.findall(head):
        name = {b"title": "title", b"author": "author", b"subject": "subject"}.get(key)
        if name and name not in raw:
            raw[name] = value.decode("cp1252", "replace")
    for key, parts in _INFO_DATE.findall(head):
        fields = {k.decode(): int(v) for k, v in _DATE_PART.findall(parts)}
        stamp = (
            f"{fields.get('yr', 1):04d}-{fields.get('mo', 1):02d}-{fields.get('dy', 1):02d}"
            f"T{fields.get('hr', 0):02d}:{fields.get('min', 0):02d}:{fields.get('sec', 0):02d}"
        )
        raw["created" if key == b"creatim" else "modified"] = stamp
    return clean_meta(raw)


def rtf_text(data: bytes) -> str:
    from striprtf.striprtf import rtf_to_text

    convert: Any = rtf_to_text  # the library has no type hints
    # RTF is 7-bit; \'xx escapes and \uN carry the rest, which striprtf decodes.
    source = data.decode("latin-1")
    try:
        return str(convert(source, errors="replace"))
    except Exception as exc:  # striprtf raises plain errors on broken escapes
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(f"The RTF document could not be read: {detail}.") from exc


def extract_rtf(spec: ExtractSpec) -> Iterator[Record]:
    data = Path(spec.path).read_bytes()
    text = normalize_text(rtf_text(data))
    check_chars(len(text), spec)
    yield meta_record("rtf", 1, metadata=rtf_metadata(data))
    yield page_record(1, text, has_text_layer=bool(text))
