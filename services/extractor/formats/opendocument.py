"""OpenDocument text, spreadsheet and presentation (ODT, ODS, ODP), read from content.xml
with defusedxml (no entities), the metadata from meta.xml.

- ODT: one page (a text document has no fixed pagination, as DOCX): headings, paragraphs,
  list items (`- ` before each) and tables (a row per line, cells tab-separated) in order.
- ODS: each sheet a page, its rows as tab-separated lines. Repeated rows and columns are
  expanded only when they hold something, and at most MAX_REPEAT times.
- ODP: each slide a page, its speaker notes under a `Notes:` line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from services.extractor.formats import Record, check_chars
from services.extractor.formats.containers import (
    local_name,
    odf_metadata,
    open_zip,
    parse_xml,
    read_entry,
)
from services.extractor.formats.headings import first_line_heading, heading, headings_of
from services.extractor.formats.tables import clean_rows, is_table, page_tables
from services.extractor.normalize import normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractSpec,
    HeadingRecord,
    TableRecord,
    meta_record,
    page_record,
)

WHAT = {"odt": "text document", "ods": "spreadsheet", "odp": "presentation"}
# A repeated row or cell with content is written out at most this many times.
MAX_REPEAT = 100
_BLOCKS = frozenset({"p", "h"})
# Elements whose paragraphs are read in place: sections, list items, and drawing shapes.
_CONTAINERS = frozenset(
    {"section", "list-item", "list-header", "frame", "text-box", "g", "custom-shape", "rect"}
    | {"ellipse", "line", "connector", "polygon"}
)


def _attr(element: Any, name: str) -> str | None:
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return str(value)
    return None


def inline_text(element: Any) -> str:
    """A paragraph's text: spans and links flattened, <text:s c="3"/> as spaces, tabs and line
    breaks as such; notes (footnotes) kept in brackets where they stand."""
    parts: list[str] = [element.text or ""]
    for child in element:
        name = local_name(child.tag)
        if name == "s":
            parts.append(" " * min(int(_attr(child, "c") or 1), 100))
        elif name == "tab":
            parts.append("\t")
        elif name == "line-break":
            parts.append("\n")
        elif name == "note":
            body = " ".join(
                inline_text(p) for p in child.iter() if local_name(p.tag) in _BLOCKS
            ).strip()
            if body:
                parts.append(f" [{body}]")
        elif name in ("annotation", "bookmark", "bookmark-start", "bookmark-end"):
            pass
        else:
            parts.append(inline_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _repeat(element: Any, attribute: str) -> int:
    """A positive count attribute (repeated rows or columns, an outline level); 1 if absent."""
    try:
        return max(1, int(_attr(element, attribute) or 1))
    except ValueError:
        return 1


def table_lines(table: Any) -> list[str]:
    """A table's rows as tab-separated lines (rows in header and row groups included)."""
    return ["\t".join(cells) for cells in table_rows(table)]


def table_rows(table: Any) -> list[list[str]]:
    """A table's rows of cell texts (rows in header and row groups included)."""
    lines: list[list[str]] = []
    for row in table.iter():
        if local_name(row.tag) != "table-row":
            continue
        cells: list[str] = []
        for cell in row:
            if local_name(cell.tag) not in ("table-cell", "covered-table-cell"):
                continue
            text = " ".join(
                inline_text(p).strip() for p in cell if local_name(p.tag) in _BLOCKS
            ).strip()
            repeat = _repeat(cell, "number-columns-repeated")
            cells += [text] * (min(repeat, MAX_REPEAT) if text else min(repeat, 1))
        while cells and not cells[-1]:
            cells.pop()
        if cells:
            lines += [cells] * min(_repeat(row, "number-rows-repeated"), MAX_REPEAT)
    return lines


def text_blocks(container: Any) -> Iterator[str]:
    """Headings, paragraphs, list items and tables of a text body, in document order."""
    for child in container:
        name = local_name(child.tag)
        if name in _BLOCKS:
            text = inline_text(child).strip()
            if text:
                yield text
        elif name == "list":
            for item in child:
                for text in text_blocks(item):
                    yield text if text.startswith("- ") else f"- {text}"
        elif name == "table":
            lines = table_lines(child)
            if lines:
                yield "\n".join(lines)
        elif name in _CONTAINERS:
            yield from text_blocks(child)


def body_of(root: Any, kind: str) -> Any:
    for element in root.iter():
        if local_name(element.tag) == kind:
            return element
    return None


def odt_pages(body: Any) -> list[str]:
    return ["\n\n".join(text_blocks(body))]


def ods_pages(body: Any) -> list[str]:
    pages: list[str] = []
    for sheet in body:
        if local_name(sheet.tag) != "table":
            continue
        lines = table_lines(sheet)
        name = _attr(sheet, "name") or f"Sheet {len(pages) + 1}"
        pages.append(f"{name}\n\n" + "\n".join(lines) if lines else "")
    return pages


def odp_pages(body: Any) -> list[str]:
    pages: list[str] = []
    for slide in body:
        if local_name(slide.tag) != "page":
            continue
        parts: list[str] = []
        notes = ""
        for child in slide:
            if local_name(child.tag) == "notes":
                notes = "\n\n".join(b for part in child for b in text_blocks_deep(part))
            else:
                parts += text_blocks_deep(child)
        if notes:
            parts.append(f"Notes:\n{notes}")
        pages.append("\n\n".join(parts))
    return pages


def text_blocks_deep(element: Any) -> list[str]:
    """Every paragraph under a drawing element (frames, text boxes, shapes, groups), lists
    with their `- ` marks, tables as rows."""
    if local_name(element.tag) in _BLOCKS:
        text = inline_text(element).strip()
        return [text] if text else []
    return list(text_blocks([element]))


_PAGES = {
    "odt": ("text", odt_pages),
    "ods": ("spreadsheet", ods_pages),
    "odp": ("presentation", odp_pages),
}


def odt_headings(body: Any) -> list[list[HeadingRecord]]:
    """<text:h> elements at their outline level, in order (one page)."""
    found = (
        heading(_repeat(h, "outline-level"), inline_text(h))  # a missing level is 1
        for h in body.iter()
        if local_name(h.tag) == "h"
    )
    return [headings_of(found)]


def odp_headings(body: Any) -> list[list[HeadingRecord]]:
    """Each slide's title frames (presentation:class="title")."""
    pages: list[list[HeadingRecord]] = []
    for slide in body:
        if local_name(slide.tag) != "page":
            continue
        titles = [
            heading(
                2, " ".join(inline_text(p) for p in frame.iter() if local_name(p.tag) in _BLOCKS)
            )
            for frame in slide
            if local_name(frame.tag) == "frame" and _attr(frame, "class") == "title"
        ]
        pages.append(headings_of(titles))
    return pages


class OpenDocument(NamedTuple):
    pages: list[str]
    headings: list[list[HeadingRecord]]
    tables: list[list[TableRecord]]
    metadata: DocumentMeta


def read_opendocument(path: str, fmt: str) -> OpenDocument:
    """The pages' texts, each page's headings and tables, and the metadata of an
    OpenDocument file."""
    what = WHAT[fmt]
    with open_zip(path, what) as zf:
        metadata = odf_metadata(zf)
        root = parse_xml(read_entry(zf, "content.xml", what), what)
    kind, pages_of = _PAGES[fmt]
    body = body_of(root, kind)
    pages = [normalize_text(text) for text in pages_of(body)] if body is not None else []
    pages = pages or [""]
    if body is not None and fmt == "odt":
        headings = odt_headings(body)
    elif body is not None and fmt == "odp":
        headings = odp_headings(body)
    else:  # a sheet's name heads its rows
        headings = [first_line_heading(text) for text in pages]
    tables = document_tables(body, fmt) if body is not None else []
    return OpenDocument(pages, headings, tables, metadata)


def document_tables(body: Any, fmt: str) -> list[list[TableRecord]]:
    """Each page's tables: an ODS sheet is one (its rows); an ODT's tables (those not inside
    another table, whose text is part of a cell) are on its one page; slides' tables stay
    text."""
    if fmt == "ods":
        sheets = (clean_rows(table_rows(t)) for t in body if local_name(t.tag) == "table")
        return [page_tables([rows]) if is_table(rows) else [] for rows in sheets]
    if fmt != "odt":
        return []
    found = [
        rows for rows in map(clean_rows, map(table_rows, outer_tables(body))) if is_table(rows)
    ]
    return [page_tables(found)]


def outer_tables(element: Any) -> Iterator[Any]:
    """The tables below `element` that are not inside another table, in document order."""
    for child in element:
        if local_name(child.tag) == "table":
            yield child
        else:
            yield from outer_tables(child)


def extract_opendocument(spec: ExtractSpec) -> Iterator[Record]:
    pages, headings, tables, metadata = read_opendocument(spec.path, spec.format)
    if spec.format != "odt":
        metadata["page_count"] = len(pages)
    check_chars(sum(len(text) for text in pages), spec)
    yield meta_record(spec.format, len(pages), metadata=metadata)
    for number, text in enumerate(pages, start=1):
        page_headings = headings[number - 1] if number <= len(headings) else []
        page_tables_ = tables[number - 1] if number <= len(tables) else None
        yield page_record(
            number, text, has_text_layer=bool(text), headings=page_headings, tables=page_tables_
        )
