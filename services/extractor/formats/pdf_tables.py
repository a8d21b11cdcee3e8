"""PDF tables: pdfplumber's table finder, on the pages that look like they hold a table.

pdfplumber (over pdfminer.six) finds ruled tables well, but it lays out the whole page to do
it: tens of milliseconds a page, more than pdfium takes to read its text. So each page with a
text layer is first looked at through pdfium, which the PDF reader already uses: its path
objects (lines and rectangles) are counted, and only a page with enough ruling to draw a grid
goes to pdfplumber. A page of plain text has no paths, or a rule or two (a header line, a
footnote separator). Costs are measured by benchmarks/pdf_tables.py (docs/decisions/1040).

The finder's strategy is pdfplumber's default, "lines": cells are the boxes the ruling draws.
Tables without ruling (columns aligned by whitespace) stay text; guessing them from word
positions finds tables in ordinary two-column text.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from typing import Any

from services.extractor.formats import Record, fatal_if_limit, short
from services.extractor.formats.tables import Rows, clean_rows, is_table, page_tables
from services.extractor.spec import ExtractSpec, PageRecord

log = logging.getLogger(__name__)

# A path thinner than this (points) is a line; longer than RULE_MIN_LENGTH, a rule.
THIN = 2.0
RULE_MIN_LENGTH = 10.0
# Edges a page needs before the finder looks at it: a grid of 2 × 2 cells has 6 (3 rules
# each way). A rectangle or a path of several segments counts its segments.
MIN_EDGES = 6
# More path objects than this is a drawing (a chart, a map): the finder would lay it all out.
MAX_PATHS = 5000


def path_edges(path: Any) -> int:
    """The edges a path object may contribute to a grid: 1 for a thin rule, its segments
    (at least the 4 sides) for a box or a polyline, 0 for a short stroke."""
    import pypdfium2.raw as pdfium_c

    left, bottom, right, top = path.get_bounds()
    width, height = right - left, top - bottom
    if max(width, height) < RULE_MIN_LENGTH:
        return 0
    if min(width, height) <= THIN:
        return 1
    segments = int(pdfium_c.FPDFPath_CountSegments(path.raw))
    return max(4, segments - 1)  # a closed rectangle is a move and four lines


def looks_tabular(page: Any) -> bool:
    """Whether a pdfium page draws enough rules or boxes to hold a ruled table."""
    import pypdfium2.raw as pdfium_c

    edges = 0
    for count, path in enumerate(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH]), 1):
        if count > MAX_PATHS:
            return False
        edges += path_edges(path)
    return edges >= MIN_EDGES


class PdfTableFinder:
    """pdfium for the check and pdfplumber for the finding, each opened on first use (most
    pages of most PDFs never need pdfplumber)."""

    def __init__(self, path: str, password: str | None) -> None:
        self.path = path
        self.password = password
        self._pdfium: Any = None
        self._plumber: Any = None
        self.checked = 0  # pages looked at, and pages given to pdfplumber (for the logs)
        self.searched = 0

    def looks_tabular(self, index: int) -> bool:
        if self._pdfium is None:
            import pypdfium2 as pdfium

            self._pdfium = pdfium.PdfDocument(self.path, password=self.password)
        page = self._pdfium[index]
        try:
            self.checked += 1
            return looks_tabular(page)
        finally:
            page.close()

    def find(self, index: int) -> list[Rows]:
        """The page's ruled tables as rows of cells (pdfplumber's `extract_tables`)."""
        if self._plumber is None:
            import pdfplumber

            self._plumber = pdfplumber.open(self.path, password=self.password or "")
        page = self._plumber.pages[index]
        try:
            self.searched += 1
            found = [clean_rows(rows) for rows in page.extract_tables()]
        finally:
            page.close()  # pdfplumber keeps each page's layout until closed
        return [rows for rows in found if is_table(rows)]

    def close(self) -> None:
        if self._plumber is not None:
            self._plumber.close()
        if self._pdfium is not None:
            self._pdfium.close()


def page_with_tables(record: PageRecord, finder: PdfTableFinder) -> PageRecord:
    """The page record with its tables, when it has a text layer and looks tabular. A page
    whose tables cannot be read keeps its text (the failure is logged, not the page's)."""
    if not record["has_text_layer"] or record["error"]:
        return record
    index = record["page"] - 1
    try:
        if finder.looks_tabular(index):
            tables = page_tables(finder.find(index))
            if tables:
                record["tables"] = tables
    except Exception as exc:
        fatal_if_limit(exc)
        log.warning("page %d: tables not read: %s", record["page"], short(exc))
    return record


def with_tables(spec: ExtractSpec, records: Iterator[Record]) -> Iterator[Record]:
    """The PDF reader's records, each page's with its tables."""
    finder = PdfTableFinder(spec.path, spec.password)
    try:
        for record in records:
            yield page_with_tables(record, finder) if record["type"] == "page" else record
    finally:
        if isinstance(records, Generator):
            records.close()  # the reader's files are closed now, not at garbage collection
        finder.close()
        log.info("table finder: %d pages checked, %d searched", finder.checked, finder.searched)
