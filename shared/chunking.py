"""Cut page text into chunks of bounded size at paragraph, then sentence, then word boundaries.

Pure functions: the offsets index the page text, so text[start:end] is the chunk's text.
"""

from __future__ import annotations

import re
import uuid

from shared.events import Chunk, PageSource

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# A sentence ends after its closing quotes and brackets: only the whitespace after them (the
# "gap") separates it from the next one, so the closers stay in the chunk.
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"')\]]*(?P<gap>\s+)")
_WHITESPACE = re.compile(r"\s+")


def _split(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """Spans of text[start:end] separated by pattern, each stripped of outer whitespace."""
    spans: list[tuple[int, int]] = []
    pos = start
    for m in pattern.finditer(text, start, end):
        spans.append((pos, m.start("gap") if "gap" in pattern.groupindex else m.start()))
        pos = m.end()
    spans.append((pos, end))
    return [s for s in (_strip(text, a, b) for a, b in spans) if s[1] > s[0]]


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _atoms(text: str, start: int, end: int, max_chars: int) -> list[tuple[int, int]]:
    """Break a span into pieces no longer than max_chars, preferring the largest boundary."""
    if end - start <= max_chars:
        return [(start, end)]
    for pattern in (_SENTENCE_END, _WHITESPACE):
        parts = _split(text, start, end, pattern)
        if len(parts) > 1:
            out: list[tuple[int, int]] = []
            for a, b in parts:
                out.extend(_atoms(text, a, b, max_chars))
            return out
    # One unbroken run (a URL, a base64 blob): cut it hard.
    return [(i, min(i + max_chars, end)) for i in range(start, end, max_chars)]


def chunk_spans(text: str, max_chars: int) -> list[tuple[int, int]]:
    """Greedily pack paragraphs (or their sentences) into spans of at most max_chars."""
    if max_chars < 1:
        raise ValueError("max_chars must be positive")
    atoms: list[tuple[int, int, bool]] = []  # (start, end, starts a paragraph)
    for p_start, p_end in _split(text, 0, len(text), _PARAGRAPH_BREAK):
        for i, (a, b) in enumerate(_atoms(text, p_start, p_end, max_chars)):
            atoms.append((a, b, i == 0))
    spans: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for a, b, _new_paragraph in atoms:
        if cur is None:
            cur = (a, b)
        elif b - cur[0] <= max_chars:
            cur = (cur[0], b)
        else:
            spans.append(cur)
            cur = (a, b)
    if cur is not None:
        spans.append(cur)
    return spans


def make_chunks(
    job_id: uuid.UUID, page: int, source: PageSource, text: str, max_chars: int
) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=Chunk.make_id(job_id, page, source, index),
            page=page,
            index=index,
            source=source,
            start=start,
            end=end,
            text=text[start:end],
        )
        for index, (start, end) in enumerate(chunk_spans(text, max_chars))
    ]
