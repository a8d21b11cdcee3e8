"""Plain text: decoded with the detected encoding; cut into pages of bounded size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from services.extractor.formats import Record, check_chars, paged_text_records
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractSpec

_WESTERN = "cp1252"
# How much more "chaos" charset-normalizer may score Windows-1252 than its favourite before we
# still prefer 1252: on short Western text it often picks a Baltic or Central European page
# that differs only in a few accented letters.
_WESTERN_MARGIN = 0.1


def detect_encoding(data: bytes) -> str:
    from charset_normalizer import from_bytes

    try:
        data.decode("utf-8")
        return "utf-8-sig" if data.startswith(b"\xef\xbb\xbf") else "utf-8"
    except UnicodeDecodeError:
        pass
    results = list(from_bytes(data))
    if not results:
        return _WESTERN
    best = results[0]
    if best.bom or best.encoding.startswith(("utf", "ascii")):
        return str(best.encoding)
    for match in results:
        if _WESTERN in match.could_be_from_charset and match.chaos <= best.chaos + _WESTERN_MARGIN:
            return _WESTERN
    return str(best.encoding)


def decode(data: bytes) -> str:
    """Decode with the detected encoding; undecodable bytes become U+FFFD rather than
    failing the document."""
    if not data:
        return ""
    return data.decode(detect_encoding(data), errors="replace")


def read_text(spec: ExtractSpec) -> str:
    data = Path(spec.path).read_bytes()
    # UTF-32 is the widest encoding: 4 bytes per character at most, so this is safe.
    check_chars(len(data) // 4, spec)
    text = decode(data)
    check_chars(len(text), spec)
    return text


def extract_txt(spec: ExtractSpec) -> Iterator[Record]:
    text = normalize_text(read_text(spec))
    yield from paged_text_records("txt", text, spec.flowing_page_chars)
