"""Plain text: decoded with the detected encoding; one page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from services.extractor.formats import Record, check_chars
from services.extractor.normalize import has_text_layer, normalize_text
from services.extractor.spec import ExtractSpec, meta_record, page_record


def decode(data: bytes) -> str:
    """Decode with the encoding charset-normalizer detects (UTF-8 BOM and plain ASCII included);
    undecodable bytes become U+FFFD rather than failing the document."""
    from charset_normalizer import from_bytes

    if not data:
        return ""
    best = from_bytes(data).best()
    encoding = best.encoding if best is not None else "utf-8"
    return data.decode(encoding, errors="replace")


def read_text(spec: ExtractSpec) -> str:
    data = Path(spec.path).read_bytes()
    # UTF-32 is the widest encoding: 4 bytes per character at most, so this is safe.
    check_chars(len(data) // 4, spec)
    text = decode(data)
    check_chars(len(text), spec)
    return text


def extract_txt(spec: ExtractSpec) -> Iterator[Record]:
    text = normalize_text(read_text(spec))
    yield meta_record("txt", 1)
    yield page_record(1, text, has_text_layer=has_text_layer(text))
