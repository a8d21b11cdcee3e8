"""A page's tables (the result's `tables`) in its Markdown export, where their rows stand in
the text. Pure.

A reader flattens a table into the page text in its own way (` | ` between a Word table's
cells, tabs in a sheet, `name: value;` in a CSV, a PDF's text in reading order), so a table
is found by its rows: a line holds a row when it holds the row's cells in order. The lines
from the table's first row to its last row found are replaced by the table; a table whose
first row is on no line is rendered after the page's text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A row is looked for this many lines past the row before (a cell of several lines, a
# page header in between); after MISSES_MAX rows not found in a row the table ends.
ROW_WINDOW = 6
MISSES_MAX = 3


def _words(text: str) -> str:
    return " ".join(text.split())


def holds_row(line: str, row: Sequence[str]) -> bool:
    """Whether the line holds the row's non-empty cells, in order."""
    words = _words(line)
    cells = [_words(cell) for cell in row if cell.strip()]
    if not cells or not words:
        return False
    at = 0
    for cell in cells:
        found = words.find(cell, at)
        if found < 0:
            return False
        at = found + len(cell)
    return True


def rows_span(
    lines: list[str], rows: Sequence[Sequence[str]], start: int
) -> tuple[int, int] | None:
    """The lines [first, end) the rows take up, looking from `start`; None when the first row
    is on no line."""
    first = next((n for n in range(start, len(lines)) if holds_row(lines[n], rows[0])), None)
    if first is None:
        return None
    end, misses = first + 1, 0
    for row in rows[1:]:
        found = next(
            (n for n in range(end, min(end + ROW_WINDOW, len(lines))) if holds_row(lines[n], row)),
            None,
        )
        if found is None:
            misses += 1
            if misses >= MISSES_MAX:
                break
            continue
        end, misses = found + 1, 0
    return first, end


@dataclass
class TableHeaders:
    """The header of the last table seen, for a table continued on the next page."""

    last: list[str] | None = None

    def rows_of(self, table: Mapping[str, Any]) -> list[list[str]]:
        rows = [[str(cell) for cell in row] for row in table.get("rows") or []]
        if not rows:
            return rows
        if int(table.get("first_row") or 0) == 0:
            self.last = rows[0]
            return rows
        width = max(len(row) for row in rows)
        return [self.last or [""] * width, *rows]


def place_tables(
    lines: list[str], tables: Sequence[Mapping[str, Any]], headers: TableHeaders
) -> tuple[dict[int, tuple[int, list[list[str]]]], list[list[list[str]]]]:
    """Where each table goes: {first line: (end line, rows)} for those found in the lines, in
    order, and the rows of those found nowhere."""
    placed: dict[int, tuple[int, list[list[str]]]] = {}
    unplaced: list[list[list[str]]] = []
    at = 0
    for table in tables:
        rows = headers.rows_of(table)
        if not rows:
            continue
        own = rows[1:] if int(table.get("first_row") or 0) else rows  # without a repeated header
        span = rows_span(lines, own, at)
        if span is None:
            unplaced.append(rows)
            continue
        placed[span[0]] = (span[1], rows)
        at = span[1]
    return placed, unplaced
