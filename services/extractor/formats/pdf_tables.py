"""PDF tables: pdfplumber's table finder, on the pages that look like they hold a table.

pdfplumber (over pdfminer.six) finds ruled tables well, but it lays out the whole page to do
it: tens of milliseconds a page, more than pdfium takes to read its text. So each page with a
text layer is first looked at through pdfium, which the PDF reader already uses: the straight
level and plumb segments of its path objects (lines, rectangles' sides) are collected, and only
a page with rules at three heights and at three places across (the smallest ruled grid) goes to
pdfplumber. A page of plain text has no paths, or a rule or two (a header line, a footnote
separator, a box). Costs are measured by benchmarks/pdf_tables.py (docs/decisions/1040).

The finder's strategy is pdfplumber's default, "lines": cells are the boxes the ruling draws.
Tables without ruling (columns aligned by whitespace) stay text; guessing them from word
positions finds tables in ordinary two-column text.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Generator, Iterator
from typing import Any

from services.extractor.formats import Record, fatal_if_limit, short
from services.extractor.formats.tables import Rows, clean_rows, is_table, page_tables
from services.extractor.spec import ExtractSpec, PageRecord

log = logging.getLogger(__name__)

# A straight segment within this many points of level (or plumb) is a rule, when it is at
# least RULE_MIN_LENGTH long; rules at the same place within a point are one.
LEVEL = 1.0
RULE_MIN_LENGTH = 10.0
# A grid of 2 x 2 cells has 3 horizontal rules at different heights and 3 vertical ones at
# different places; a box, a text frame, underlines or a page border have fewer one way.
MIN_RULES_EACH_WAY = 3
# More path objects, or segments, than this is a drawing (a chart, a map): the finder would
# lay it all out for nothing.
MAX_PATHS = 5000
MAX_SEGMENTS = 50_000


def path_rules(path: Any, rules: tuple[set[int], set[int]]) -> int:
    """Add the path's straight rules to (heights of horizontal rules, places of vertical
    rules), in page points rounded to 1; returns its segment count. A rectangle is a move,
    three or four lines and a close: its four sides."""
    import pypdfium2.raw as pdfium_c

    matrix = path.get_matrix()
    across, down = rules
    count = int(pdfium_c.FPDFPath_CountSegments(path.raw))
    x, y = ctypes.c_float(), ctypes.c_float()
    start = here = (0.0, 0.0)
    for n in range(count):
        segment = pdfium_c.FPDFPath_GetPathSegment(path.raw, n)
        pdfium_c.FPDFPathSegment_GetPoint(segment, ctypes.byref(x), ctypes.byref(y))
        point = matrix.on_point(x.value, y.value)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_LINETO:
            _add_rule(here, point, across, down)
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO:
            start = point
        here = point
        if pdfium_c.FPDFPathSegment_GetClose(segment):
            _add_rule(here, start, across, down)
            here = start
    return count


def _add_rule(
    a: tuple[float, float], b: tuple[float, float], across: set[int], down: set[int]
) -> None:
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    if dy <= LEVEL and dx >= RULE_MIN_LENGTH:
        across.add(round(a[1]))
    elif dx <= LEVEL and dy >= RULE_MIN_LENGTH:
        down.add(round(a[0]))


def looks_tabular(page: Any) -> bool:
    """Whether a pdfium page draws rules at three heights or more and at three places or
    more across: what the smallest ruled grid needs."""
    import pypdfium2.raw as pdfium_c

    rules: tuple[set[int], set[int]] = (set(), set())
    segments = 0
    for count, path in enumerate(page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_PATH]), 1):
        segments += path_rules(path, rules)
        if count > MAX_PATHS or segments > MAX_SEGMENTS:
            return False
    return min(len(rules[0]), len(rules[1])) >= MIN_RULES_EACH_WAY


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
