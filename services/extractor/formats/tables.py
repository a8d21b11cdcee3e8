"""Tables as data: rows of cells beside the page text, placed on the pages their rows stand on.

The readers keep flattening a table into the page's text (what is chunked and analysed); the
structure travels beside it as `tables` on the page record (shared.events.Table). This module
holds what the formats share: cleaning rows, bounding what a page carries, placing the rows
of a format without pages of its own on the pages its text was cut into, and reading the
tables of a Word document and of an HTML page.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from services.extractor.normalize import normalize_text
from services.extractor.spec import TableRecord
from shared.bounds import (
    TABLE_CELL_MAX,
    TABLE_CHARS_PER_PAGE_MAX,
    TABLE_COLUMNS_MAX,
    TABLE_ROWS_MAX,
    TABLES_PER_PAGE_MAX,
)

Rows = list[list[str]]

# What a cell weighs beyond its text in a message (its quotes and comma in the JSON), as
# shared.events.PageExtracted.table_chars counts it.
CELL_OVERHEAD = 3


def cell_text(text: str) -> str:
    """A cell's normalised text: its lines kept (a PDF cell of five states, one a line),
    spaces within each collapsed, empty lines dropped."""
    lines = (" ".join(line.split()) for line in normalize_text(text).split("\n"))
    words = "\n".join(line for line in lines if line)
    return words if len(words) <= TABLE_CELL_MAX else words[: TABLE_CELL_MAX - 1] + "…"


def clean_row(row: Sequence[Any]) -> list[str]:
    """A row of cell text: cells normalised, trailing empty cells dropped, at most
    TABLE_COLUMNS_MAX cells; [] for a row without text."""
    cells = [cell_text(str(c)) if c is not None else "" for c in row[:TABLE_COLUMNS_MAX]]
    while cells and not cells[-1]:
        cells.pop()
    return cells


def clean_rows(rows: Iterable[Sequence[Any]]) -> Rows:
    """Rows of cell text (clean_row), empty rows dropped."""
    return [cells for cells in map(clean_row, rows) if cells]


def is_table(rows: Rows) -> bool:
    """At least two cells with text: a single cell is a box around text, not a table."""
    return sum(1 for row in rows for cell in row if cell) >= 2


def row_weight(row: list[str]) -> int:
    return sum(len(cell) + CELL_OVERHEAD for cell in row)


def bound_page(
    tables: list[TableRecord], limit: int = TABLE_CHARS_PER_PAGE_MAX
) -> list[TableRecord]:
    """A page's tables kept within `limit` characters of cells (and the model's counts): rows
    past it are left out, and the table that lost rows says so (`truncated`); a table with
    no row left is dropped. The page's text still holds every row."""
    kept: list[TableRecord] = []
    left = limit
    for table in tables[:TABLES_PER_PAGE_MAX]:
        rows: Rows = []
        for row in table["rows"][:TABLE_ROWS_MAX]:
            weight = row_weight(row)
            if weight > left:
                break
            left -= weight
            rows.append(row)
        if rows:
            record = TableRecord(index=table["index"], rows=rows)
            if table.get("first_row"):
                record["first_row"] = table["first_row"]
            if len(rows) < len(table["rows"]) or table.get("truncated"):
                record["truncated"] = True
            kept.append(record)
        if left <= 0 or len(rows) < len(table["rows"]):
            break
    return kept


def _keys(row: list[str]) -> list[str]:
    """What finds a row in the page text: its longest cell, else its longest word (a word
    survives whatever space the format puts inside a cell)."""
    cells = [cell for cell in row if cell]
    words = [w for cell in cells for w in cell.split()]
    return [max(cells, key=len), max(words, key=len)] if words else []


def _find(pages: list[str], page: int, at: int, keys: list[str]) -> tuple[int, int] | None:
    """(page, offset past the key) of the first key found from `at` on `page`, else from the
    start of the next page."""
    for key in keys:
        where = pages[page].find(key, at)
        if where >= 0:
            return page, where + len(key)
        if page + 1 < len(pages) and (where := pages[page + 1].find(key)) >= 0:
            return page + 1, where + len(key)
    return None


def place_rows(
    pages: list[str], tables: list[Rows], *, only_found: bool = False
) -> list[list[TableRecord]]:
    """Each page's tables, for a text cut into `pages`: every row goes on the page where its
    text is found, searching forward from the row before (this page, else the next), so a
    table longer than a page continues as the next page's first table (its `first_row` says
    where in the whole table it goes on). A row not found stays with the row before. With
    `only_found`, a table none of whose rows is in the text (an HTML table the main-text
    extraction left out: navigation, boilerplate) is dropped."""
    placed: list[list[TableRecord]] = [[] for _ in pages]
    page, at = 0, 0
    for rows in tables:
        parts: dict[int, TableRecord] = {}
        found_any = False
        for number, row in enumerate(rows):
            found = _find(pages, page, at, _keys(row))
            if found is not None:
                page, at = found
                found_any = True
            part = parts.setdefault(page, TableRecord(index=0, rows=[]))
            if not part["rows"] and number:
                part["first_row"] = number
            part["rows"].append(row)
        if only_found and not found_any:
            continue
        for number, part in parts.items():
            part["index"] = len(placed[number])
            placed[number].append(part)
    return [bound_page(tables) for tables in placed]


def page_tables(tables: list[Rows]) -> list[TableRecord]:
    """The tables of one page (a sheet, a PDF page), numbered in order, bounded."""
    records = [TableRecord(index=i, rows=rows) for i, rows in enumerate(tables)]
    return bound_page(records)


# --- DOCX ---------------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _docx_cell(cell: Any) -> str:
    return " ".join(p.text.strip() for p in cell.paragraphs if p.text.strip())


def docx_table_rows(table: Any) -> Rows:
    """A Word table's rows; a horizontally merged cell once (python-docx repeats it)."""
    rows: list[list[str]] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:
                continue
            previous = cell._tc
            cells.append(_docx_cell(cell))
        rows.append(cells)
    return clean_rows(rows)


def docx_tables(document: Any) -> list[Rows]:
    """The tables of a Word document's body, in order (a table nested in a cell is part of
    that cell's text, not a table of its own)."""
    from docx.table import Table

    found: list[Rows] = []
    for child in document.element.body.iterchildren():
        if child.tag == _W + "tbl":
            rows = docx_table_rows(Table(child, document))
            if is_table(rows):
                found.append(rows)
    return found


# --- HTML ---------------------------------------------------------------------------------


def html_tables(data: bytes) -> list[Rows]:
    """The innermost <table>s of an HTML page (an outer one is layout around them), their
    <tr> rows of <th>/<td> cells; none when the page does not parse."""
    import lxml.html

    try:
        root: Any = lxml.html.document_fromstring(data)
    except Exception:  # the text reader says why the page is unreadable, if it is
        return []
    found: list[Rows] = []
    for table in root.iter("table"):
        if next(table.iterdescendants("table"), None) is not None:
            continue
        rows = (
            # Line breaks in HTML source are spaces.
            [" ".join(cell.text_content().split()) for cell in tr if cell.tag in ("td", "th")]
            for tr in table.iterdescendants("tr")
        )
        cleaned = clean_rows(rows)
        if is_table(cleaned):
            found.append(cleaned)
    return found
