"""The headings a page's format marks (heading styles, <h1>-<h6>, slide titles, sheet names),
as they stand in the page's text: the Markdown export marks those lines as headings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.extractor.normalize import normalize_text
from services.extractor.spec import HeadingRecord
from shared.bounds import HEADINGS_PER_PAGE_MAX

# A longer "heading" is a paragraph with a heading style: it is left out.
HEADING_MAX_CHARS = 500


def heading(level: int, text: str) -> HeadingRecord | None:
    """A heading of `level` (kept within 1-6), its text normalised as page text is and its
    whitespace collapsed; None when it has no text or is too long to be one."""
    words = " ".join(normalize_text(text).split())
    if not words or len(words) > HEADING_MAX_CHARS:
        return None
    return {"level": min(max(level, 1), 6), "text": words}


def headings_of(found: Iterable[HeadingRecord | None]) -> list[HeadingRecord]:
    kept = [h for h in found if h is not None]
    return kept[:HEADINGS_PER_PAGE_MAX]


def first_line_heading(text: str, level: int = 2) -> list[HeadingRecord]:
    """The page's first line as its heading (a sheet's name above its rows)."""
    first = text.split("\n", 1)[0]
    return headings_of([heading(level, first)]) if text else []


def html_headings(data: bytes) -> list[HeadingRecord]:
    """<h1>-<h6> of an HTML or XHTML document, in document order; none when it does not
    parse."""
    import lxml.html

    try:
        root: Any = lxml.html.document_fromstring(data)
    except Exception:  # the page's text says why it is unreadable, if it is
        return []
    found = (
        heading(int(str(element.tag)[1]), element.text_content())
        for element in root.iter("h1", "h2", "h3", "h4", "h5", "h6")
    )
    return headings_of(found)
