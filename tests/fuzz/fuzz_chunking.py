"""Chunking (shared/chunking.py): for any text and size, the spans are in order, do not
overlap, are at most max_chars long, begin and end on non-space characters, and together
hold every non-space character of the text. The first two bytes pick max_chars (1..1024);
the rest is the text (UTF-8, damaged bytes replaced)."""

from __future__ import annotations

import sys

from tests.fuzz.runner import instrumented, main

with instrumented():
    from shared.chunking import chunk_spans


def target(data: bytes) -> None:
    if len(data) < 2:
        return
    max_chars = 1 + int.from_bytes(data[:2], "big") % 1024
    text = data[2:].decode("utf-8", "replace")
    spans = chunk_spans(text, max_chars)
    end_of_last = 0
    covered = 0
    for start, end in spans:
        assert end_of_last <= start < end <= len(text), (spans, len(text))
        assert end - start <= max_chars, (start, end, max_chars)
        assert not text[start].isspace() and not text[end - 1].isspace(), (start, end)
        covered += sum(not ch.isspace() for ch in text[start:end])
        end_of_last = end
    assert covered == sum(not ch.isspace() for ch in text), "a character fell between chunks"


def seeds() -> list[bytes]:
    prose = (
        "First sentence. Second one! A third?\n\nNew paragraph with a long "
        "https://example.org/very/long/url/without/spaces and more words.\n \n\t"
        '\u65e5\u672c\u8a9e\u3002\u6587\u7ae0\u3002 (quoted.) "Yes." [end]'
    )
    return [
        b"\x00\x10" + prose.encode(),
        b"\x00\x01" + prose.encode(),
        b"\x03\xff" + prose.encode(),
        b"\x00\x05" + b"x" * 40,
        b"\x00\x08" + b"\n\n\n   \t\r\n",
        b"\x00\x02" + "\u2029\u00a0\u2028\u3000".encode(),
    ]


if __name__ == "__main__":
    sys.exit(main("chunking", target, seeds))
