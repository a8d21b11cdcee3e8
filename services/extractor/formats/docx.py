"""DOCX, read whole: the body (paragraphs, tables and the tables nested in them, content
controls, text boxes) in document order, each section's header and footer once, footnotes and
endnotes, and the comments when the job asks for them (docx_text, docx_parts, docx_pages).

Word documents have no fixed pagination (where a page ends depends on the renderer), so a page
is what the author's explicit page and section breaks delimit, cut again between paragraphs
when it is longer than the flowing-text page size (spec.flowing_page_chars): a short document
without breaks is page 1 (docs/decisions/1020).

The container is checked before it is opened (entry count, inflated size and ratio:
shared.sniff.zip_problem). python-docx parses with lxml set not to resolve entities or fetch
anything, so an entity (an external one, XXE, or an internal one, billion laughs) stays an
unresolved reference node; those nodes are removed, keeping the text that follows them, which
python-docx would otherwise drop (`BEFORE &x; AFTER` read as `BEFORE `).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

from services.extractor.formats import Record, check_chars, paged_section_records
from services.extractor.formats.containers import ooxml_metadata, open_zip
from services.extractor.formats.docx_pages import DocxPager
from services.extractor.formats.docx_text import BodyText, W
from services.extractor.formats.headings import heading, headings_of
from services.extractor.formats.tables import docx_tables
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractionFatal, ExtractSpec, HeadingRecord
from shared.sniff import DOCX_MAIN_PART, zip_problem


def heading_level(style_name: str) -> int | None:
    """The level a paragraph style gives (Title 1, Heading N as N), else None."""
    if style_name == "Title":
        return 1
    name, _, number = style_name.partition(" ")
    if name == "Heading" and number.isdigit():
        return int(number)
    return None


def style_names(document: Any) -> dict[str, str]:
    """Paragraph style id → the name Word shows ("heading 1" → "Heading 1"), read once: asking
    python-docx for each paragraph's style scans every style each time (90% of the time of a
    3,000-paragraph document went there)."""
    from docx.styles import BabelFish

    try:
        root = document.styles.element
    except Exception:  # a damaged or missing style part: no paragraph is a heading
        return {}
    names: dict[str, str] = {}
    for style in root.iterchildren(W + "style"):
        style_id = style.get(W + "styleId")
        name = style.find(W + "name")
        if style_id and name is not None:
            names[style_id] = BabelFish.internal2ui(str(name.get(W + "val", "")))
    return names


def docx_headings(document: Any) -> list[HeadingRecord]:
    """The body's paragraphs with a Title or Heading style, in order, with their text as the
    pages have it."""
    names = style_names(document)
    found: list[HeadingRecord | None] = []
    for paragraph in document.element.body.iterchildren(W + "p"):
        style = paragraph.find(f"{W}pPr/{W}pStyle")
        level = (
            heading_level(names.get(style.get(W + "val", ""), "")) if style is not None else None
        )
        if level is not None:
            # its own text: the first block (a text box anchored in it follows as another)
            text = next((b for b in BodyText().paragraph(paragraph) if isinstance(b, str)), "")
            found.append(heading(level, text))
    return headings_of(found)


def drop_entity_references(element: Any) -> int:
    """Remove the unresolved entity references below `element`, keeping the text after each
    (lxml holds it as the reference's tail); returns how many were removed."""
    from lxml import etree

    references = list(element.iter(etree.Entity))
    for reference in references:
        parent = reference.getparent()
        tail = reference.tail or ""
        previous = reference.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
        parent.remove(reference)
    return len(references)


def open_docx(path: str) -> Any:
    import docx

    problem = zip_problem(path)
    if problem is not None:
        raise ExtractionFatal(problem)
    try:
        with zipfile.ZipFile(path) as zf:
            if DOCX_MAIN_PART not in zf.namelist():
                raise ExtractionFatal("The file is a ZIP archive but not a Word document.")
        document = docx.Document(path)
        drop_entity_references(document.element)
        return document
    except ExtractionFatal:
        raise
    except zipfile.BadZipFile as exc:
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {exc}."
        ) from exc
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {detail}."
        ) from exc


def extract_docx(spec: ExtractSpec) -> Iterator[Record]:
    document = open_docx(spec.path)
    try:
        pager = DocxPager(
            document,
            drop_entity_references,
            lambda total: check_chars(total, spec),
            comments=spec.docx_comments,
        )
        pages = pager.read()
    except ExtractionFatal:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {detail}."
        ) from exc
    with open_zip(spec.path, "Word document") as zf:
        metadata = ooxml_metadata(zf, "Pages")
    yield from paged_section_records(
        "docx",
        [normalize_text(page) for page in pages],
        spec.flowing_page_chars,
        metadata=metadata,
        headings=docx_headings(document),
        tables=docx_tables(document),
    )
