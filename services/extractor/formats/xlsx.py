"""XLSX: each sheet a page, its rows as lines of tab-separated cell values, and the sheet as
a table (its rows of cells) beside them.

openpyxl reads in read-only mode, which streams each sheet's XML row by row instead of
building the workbook in memory. What a sheet declares about its size is ignored
(reset_dimensions: a sheet that claims A1:Z1048576 with three rows is read as three rows),
a run of EMPTY_RUN_MAX empty rows ends the sheet (a million empty rows cost no more than the
first ten thousand), and the cells read across the workbook are capped (a sentence past
MAX_CELLS). Values are shown as Excel stores them (a formula's cached value is not
recomputed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, time
from typing import IO, Any

from services.extractor.formats import Record, check_chars, short
from services.extractor.formats.containers import ooxml_metadata, open_zip
from services.extractor.formats.headings import first_line_heading
from services.extractor.formats.tables import clean_rows, is_table, page_tables
from services.extractor.normalize import normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    meta_record,
    page_record,
)

# A sheet's data ends at the first run of this many empty rows.
EMPTY_RUN_MAX = 10_000
# Cells (empty ones included) read across the whole workbook.
MAX_CELLS = 5_000_000
# Columns read per row (a row of 16,384 declared columns is cut here).
MAX_COLUMNS = 1_000


def cell_text(value: Any) -> str:
    """A cell's value as text: dates in ISO form, whole floats without `.0`."""
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return " ".join(str(value).split())


class CellBudget:
    """The cells left to read in a document; a sentence when they run out."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = MAX_CELLS if limit is None else limit
        self.left = self.limit

    def spend(self, cells: int) -> None:
        self.left -= cells
        if self.left < 0:
            raise ExtractionFatal(
                f"The spreadsheet has more than {self.limit} cells, the limit for one document."
            )


def sheet_rows(rows: Iterator[tuple[Any, ...]], budget: CellBudget) -> list[list[str]]:
    """The sheet's non-empty rows as cell texts; stops after EMPTY_RUN_MAX empty rows in a row
    (the rest of the sheet is taken to be empty)."""
    lines: list[list[str]] = []
    empty_run = 0
    for row in rows:
        budget.spend(max(len(row), 1))
        texts = [cell_text(v) for v in row[:MAX_COLUMNS]]
        while texts and not texts[-1]:
            texts.pop()
        if not texts:
            empty_run += 1
            if empty_run >= EMPTY_RUN_MAX:
                break
            continue
        empty_run = 0
        lines.append(texts)
    return lines


def open_workbook(source: IO[bytes]) -> Any:
    """The workbook in read-only mode. openpyxl gets an open file, not the path: it refuses a
    path without an Excel suffix, and a stored blob has none."""
    import openpyxl

    try:
        return openpyxl.load_workbook(source, read_only=True, data_only=True, keep_links=False)
    except Exception as exc:  # zipfile's, the XML parser's and openpyxl's errors alike
        raise ExtractionFatal(
            f"The spreadsheet is damaged and could not be read: {short(exc)}."
        ) from exc


def extract_xlsx(spec: ExtractSpec) -> Iterator[Record]:
    with open_zip(spec.path, "spreadsheet") as zf:  # the container is checked first
        metadata = ooxml_metadata(zf)
    with open(spec.path, "rb") as source:
        yield from read_workbook(spec, open_workbook(source), metadata)


def read_workbook(spec: ExtractSpec, workbook: Any, metadata: DocumentMeta) -> Iterator[Record]:
    try:
        sheets = list(workbook.worksheets)
        metadata["page_count"] = len(sheets)
        yield meta_record("xlsx", len(sheets), metadata=metadata)
        budget = CellBudget()
        total = 0
        for number, sheet in enumerate(sheets, start=1):
            if hasattr(sheet, "reset_dimensions"):
                sheet.reset_dimensions()  # the declared size is not trusted
            try:
                cells = sheet_rows(sheet.iter_rows(values_only=True), budget)
            except ExtractionFatal:
                raise
            except Exception as exc:
                detail = " ".join(str(exc).split())[:160] or type(exc).__name__
                yield page_record(
                    number, "", has_text_layer=False, error=f"Sheet {number}: {detail}"
                )
                continue
            lines = ["\t".join(row) for row in cells]
            text = normalize_text(f"{sheet.title}\n\n" + "\n".join(lines)) if lines else ""
            total += len(text)
            check_chars(total, spec)
            headings = first_line_heading(text)  # the sheet's name
            rows = clean_rows(cells)
            table = page_tables([rows]) if is_table(rows) else []
            yield page_record(
                number, text, has_text_layer=bool(text), headings=headings, tables=table
            )
    finally:
        workbook.close()
