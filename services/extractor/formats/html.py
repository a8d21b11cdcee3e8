"""HTML: the main text of the page (trafilatura), not its navigation; in pages of bounded size.

Nothing is ever fetched: both parsers get the bytes and no base URL.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from services.extractor.formats import Record, check_chars, paged_text_records
from services.extractor.formats.containers import clean_meta
from services.extractor.formats.headings import html_headings
from services.extractor.formats.tables import html_tables
from services.extractor.normalize import normalize_text
from services.extractor.spec import DocumentMeta, ExtractionFatal, ExtractSpec

log = logging.getLogger(__name__)


def main_text(data: bytes) -> str:
    """Article text by trafilatura; the whole visible text when it finds no main content."""
    import trafilatura

    text = ""
    try:
        text = (
            trafilatura.extract(
                data,
                include_comments=False,
                include_tables=True,
                include_links=False,
                include_images=False,
                favor_recall=True,
                deduplicate=False,
            )
            or ""
        )
    except Exception as exc:  # trafilatura is a heuristic: fall back rather than fail
        log.warning("trafilatura failed: %s", exc)
    if text.strip():
        return text
    return visible_text(data)


def visible_text(data: bytes) -> str:
    import lxml.html

    try:
        root = lxml.html.document_fromstring(data)
    except Exception as exc:
        raise ExtractionFatal(f"The HTML document could not be parsed: {exc}.") from exc
    for bad in root.xpath("//script|//style|//noscript|//template"):
        bad.drop_tree()
    return str(root.text_content())


def html_metadata(data: bytes) -> DocumentMeta:
    """<title>, <html lang>, and the author, description, generator and date <meta> tags; an
    unparsable page gives nothing."""
    import lxml.html

    try:
        root = lxml.html.document_fromstring(data)
    except Exception:
        return DocumentMeta()
    names = {
        "author": "author",
        "description": "subject",
        "generator": "producer",
        "date": "created",
        "dcterms.created": "created",
        "dcterms.modified": "modified",
    }
    raw: dict[str, str] = {"language": str(root.get("lang") or "")}
    titles = root.xpath("//title/text()")
    if titles:
        raw["title"] = str(titles[0])
    for element in root.xpath("//meta[@name and @content]"):
        key = names.get(str(element.get("name")).lower())
        if key is not None and not raw.get(key):
            raw[key] = str(element.get("content"))
    return clean_meta(raw)


def extract_html(spec: ExtractSpec) -> Iterator[Record]:
    data = Path(spec.path).read_bytes()
    text = normalize_text(main_text(data))
    check_chars(len(text), spec)
    # Only the tables whose text the main-text extraction kept (not navigation or layout).
    yield from paged_text_records(
        "html",
        text,
        spec.flowing_page_chars,
        metadata=html_metadata(data),
        headings=html_headings(data),
        tables=html_tables(data),
        only_found_tables=True,
    )
