"""A document's tables as the event contract carries them (re-exported by shared.events):
rows of cell text on the page they stand on (docs/decisions/1040)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.bounds import TABLE_COLUMNS_MAX, TABLE_ROWS_MAX, TableCell


class Table(BaseModel):
    """A table of the document as rows of cells (text), on the page its rows stand on: DOCX,
    ODT and HTML tables, an XLSX or ODS sheet, a CSV file, a ruled PDF table. The cells'
    text is also in the page's text (as the format flattens a table); this is its structure.

    A table longer than a page (a CSV, a long Word table) continues as the next page's first
    table: `first_row` is the position of this part's first row in the whole table (0: the
    table starts here, and its first row is usually its header)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0, description="The table's position among its page's, from 0.")
    rows: list[Annotated[list[TableCell], Field(max_length=TABLE_COLUMNS_MAX)]] = Field(
        min_length=1, max_length=TABLE_ROWS_MAX
    )
    first_row: int = Field(
        default=0,
        ge=0,
        description="Where this part starts in a table continued from the page before "
        "(0: the table starts on this page).",
    )
    truncated: bool = Field(
        default=False,
        description="Rows or cells were left out to keep the page within its bound "
        "(the page's text still has them).",
    )
