"""CSV: each row rendered with its column names, so any chunk of it stands on its own.

    name, age, city
    name: Ann; age: 31; city: Oslo
    name: Bob; age: 45; city: Rome
    <blank line every ROWS_PER_BLOCK rows, so chunks cut between rows>

Cut into pages of bounded size (spec.flowing_page_chars), between row blocks where it can be.
The file is also one table (its rows of cells, the header first), its rows on the pages
where their lines are.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from services.extractor.formats import Record, paged_text_records
from services.extractor.formats.plain import read_text
from services.extractor.formats.tables import clean_row, is_table
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractSpec

ROWS_PER_BLOCK = 20
_SNIFF_SAMPLE = 64 * 1024


def sniff_dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:_SNIFF_SAMPLE]
    if len(text) > _SNIFF_SAMPLE:
        sample = sample.rsplit("\n", 1)[0]  # don't hand the sniffer a cut-off row
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def render_rows(rows: Iterator[list[str]], table: list[list[str]] | None = None) -> str:
    """The rows as text; each non-empty row also appended to `table`, when given, as cell
    texts (cleaned as it is read: a large file's rows are held once)."""
    header: list[str] | None = None
    lines: list[str] = []
    count = 0
    for row in rows:
        if not any(cell.strip() for cell in row):
            continue
        if table is not None and (cells := clean_row(row)):
            table.append(cells)
        if header is None:
            header = [cell.strip() or f"column {i + 1}" for i, cell in enumerate(row)]
            lines.append(", ".join(header))
            continue
        names = header + [f"column {i + 1}" for i in range(len(header), len(row))]
        pairs = [f"{names[i]}: {cell.strip()}" for i, cell in enumerate(row) if cell.strip()]
        lines.append("; ".join(pairs))
        count += 1
        if count % ROWS_PER_BLOCK == 0:
            lines.append("")
    return "\n".join(lines)


def render_csv(text: str, table: list[list[str]] | None = None) -> str:
    """The table as header-attached rows; text that the csv module cannot parse stays as is
    (and is no table: `table` is emptied)."""
    dialect = sniff_dialect(text)
    old_limit = csv.field_size_limit()
    csv.field_size_limit(max(old_limit, len(text) + 1))
    try:
        return render_rows(csv.reader(io.StringIO(text, newline=""), dialect), table)
    except csv.Error:
        if table is not None:
            table.clear()
        return text
    finally:
        csv.field_size_limit(old_limit)


def extract_csv(spec: ExtractSpec) -> Iterator[Record]:
    rows: list[list[str]] = []
    text = normalize_text(render_csv(read_text(spec), rows))
    yield from paged_text_records(
        "csv", text, spec.flowing_page_chars, tables=[rows] if is_table(rows) else None
    )
