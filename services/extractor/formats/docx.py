"""DOCX: body paragraphs and tables in document order.

Word documents have no fixed pagination (page breaks depend on the renderer), so the text is
cut into pages of bounded size (TEXT_PAGE_MAX_CHARS) between paragraphs: a short document is
page 1.

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

from services.extractor.formats import Record, check_chars, paged_text_records
from services.extractor.formats.containers import ooxml_metadata, open_zip
from services.extractor.formats.headings import heading, headings_of
from services.extractor.formats.tables import docx_tables
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractionFatal, ExtractSpec, HeadingRecord
from shared.sniff import DOCX_MAIN_PART, zip_problem

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _cell_text(cell: Any) -> str:
    return " ".join(p.text.strip() for p in cell.paragraphs if p.text.strip())


def table_lines(table: Any) -> list[str]:
    """One line per row, cells joined by ' | '; a merged cell is shown once."""
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:
                continue  # python-docx repeats a horizontally merged cell
            previous = cell._tc
            cells.append(_cell_text(cell))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


def document_blocks(document: Any) -> Iterator[str]:
    """Paragraph and table text in body order (headings are paragraphs and are kept)."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        if child.tag == _W + "p":
            text = Paragraph(child, document).text.strip()
            if text:
                yield text
        elif child.tag == _W + "tbl":
            lines = table_lines(Table(child, document))
            if lines:
                yield "\n".join(lines)


def heading_level(style_name: str) -> int | None:
    """The level a paragraph style gives (Title 1, Heading N as N), else None."""
    if style_name == "Title":
        return 1
    name, _, number = style_name.partition(" ")
    if name == "Heading" and number.isdigit():
        return int(number)
    return None


def docx_headings(document: Any) -> list[HeadingRecord]:
    """The body's paragraphs with a Title or Heading style, in order (a style that cannot be
    read makes a paragraph plain text, never a failure)."""
    found: list[HeadingRecord | None] = []
    for paragraph in document.paragraphs:
        try:
            level = heading_level(str(paragraph.style.name or ""))
        except Exception:  # a damaged style part: the text is what matters
            level = None
        if level is not None:
            found.append(heading(level, paragraph.text))
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
    parts: list[str] = []
    total = 0
    try:
        for block in document_blocks(document):
            total += len(block) + 2
            check_chars(total, spec)
            parts.append(block)
    except ExtractionFatal:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {detail}."
        ) from exc
    text = normalize_text("\n\n".join(parts))
    with open_zip(spec.path, "Word document") as zf:
        metadata = ooxml_metadata(zf, "Pages")
    yield from paged_text_records(
        "docx",
        text,
        metadata=metadata,
        headings=docx_headings(document),
        tables=docx_tables(document),
    )
