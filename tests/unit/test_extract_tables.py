"""Tables as data (issue 14, item 4): each format's reader gives its tables as rows of cells,
on the page their rows stand on, bounded; documents made here, one corpus PDF with a table.
No bus, no child process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import extract
from services.extractor.formats.pdf_tables import PdfTableFinder, looks_tabular
from services.extractor.formats.tables import bound_page, clean_rows, place_rows
from services.extractor.spec import ExtractSpec, TableRecord
from shared.events import PageExtracted, Table
from shared.sniff import sniff_path
from tests.unit import office_fixtures as make
from tests.unit import table_fixtures as tables
from tests.unit.extractor_fixtures import text_pdf


def run(path: Path, tmp_path: Path, fmt: str | None = None) -> list[dict[str, Any]]:
    fmt = fmt or sniff_path(path, path.name)
    assert fmt is not None
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(tmp_path / "blobs"))
    return [dict(r) for r in extract(spec) if r["type"] == "page"]


def page_tables(pages: list[dict[str, Any]]) -> list[list[list[list[str]]]]:
    """Each page's tables' rows."""
    return [[t["rows"] for t in page.get("tables", [])] for page in pages]


def test_xlsx_each_sheet_is_a_table_on_its_page(tmp_path: Path) -> None:
    pages = run(make.xlsx_file(tmp_path / "book.xlsx"), tmp_path)
    assert page_tables(pages) == [
        [[["Region", "Revenue", "Quarter"], ["North", "1200", "Q1"], ["South", "980.5", "Q1"]]],
        [[["Name", "Role"], ["Ingrid Larsen", "Accountant"]]],
    ]
    assert [t["index"] for p in pages for t in p["tables"]] == [0, 0]


def test_ods_sheets_and_odt_tables(tmp_path: Path) -> None:
    ods = run(make.ods_file(tmp_path / "stock.ods"), tmp_path)
    # The sheets' repeated empty rows are no rows of the table.
    assert page_tables(ods) == [
        [[["Item", "Count"], ["Rope", "12"], ["Anchor", "3"]]],
        [[["Name", "City"], ["Nordic Marine", "Bergen"]]],
    ]
    odt = run(make.odt_file(tmp_path / "minutes.odt"), tmp_path)
    assert page_tables(odt) == [[[["Member", "Vote"], ["Anna", "Yes"]]]]


def test_docx_table_with_a_merged_title_row(tmp_path: Path) -> None:
    pages = run(tables.docx_with_table(tmp_path / "plan.docx"), tmp_path)
    assert page_tables(pages) == [[[["Berth plan"], *tables.HARBOUR_ROWS]]]
    assert "Aurora Borealis" in pages[0]["text"]  # the text still has the table's words


def test_html_keeps_the_data_table_not_the_layout_table(tmp_path: Path) -> None:
    path = tmp_path / "tides.html"
    path.write_bytes(tables.HTML_WITH_TABLES)
    pages = run(path, tmp_path, "html")
    assert page_tables(pages) == [
        [
            [
                ["Day", "High water", "Low water"],
                ["Monday", "06:12", "12:40"],
                ["Tuesday", "07:01", "13:25"],
            ]
        ]
    ]


def test_html_table_left_out_of_the_main_text_is_no_table(tmp_path: Path) -> None:
    """A table the main-text extraction drops (boilerplate) is not reported either."""
    path = tmp_path / "nav.html"
    body = "<p>" + "The harbour office opens at eight every weekday morning. " * 8 + "</p>"
    path.write_bytes(
        b"<html><body><footer><table><tr><td>Zzyzx link</td><td>Qwerty link</td></tr>"
        b"</table></footer><article>" + body.encode() + b"</article></body></html>"
    )
    pages = run(path, tmp_path, "html")
    assert "Zzyzx" not in pages[0]["text"]
    assert page_tables(pages) == [[]]


def test_csv_longer_than_a_page_continues_its_table_on_the_next_pages(tmp_path: Path) -> None:
    pages = run(tables.long_csv(tmp_path / "ships.csv", rows=3000), tmp_path)
    assert len(pages) > 2
    parts = [p["tables"] for p in pages]
    assert all(len(part) == 1 and part[0]["index"] == 0 for part in parts)
    assert parts[0][0]["rows"][0] == ["ship", "port", "cargo"]
    assert "first_row" not in parts[0][0]
    # Every row once, in order, each part on the page whose text holds its rows.
    rows = [row for part in parts for row in part[0]["rows"]]
    assert rows[1:] == [[f"Vessel {n}", f"Port {n % 17}", f"Cargo lot {n}"] for n in range(1, 3001)]
    seen = 0
    for page, part in zip(pages, parts, strict=True):
        table = part[0]
        assert table.get("first_row", 0) == seen
        seen += len(table["rows"])
        for row in (table["rows"][0], table["rows"][-1]):
            assert row[-1] in page["text"]


def test_ruled_pdf_table_and_a_page_without_one(tmp_path: Path) -> None:
    path = tables.ruled_table_pdf(tmp_path / "berths.pdf")
    pages = run(path, tmp_path)
    assert page_tables(pages) == [[tables.HARBOUR_ROWS], []]
    assert "Skagerrak Trader" in pages[0]["text"]


def test_pdf_tables_can_be_turned_off(tmp_path: Path) -> None:
    path = tables.ruled_table_pdf(tmp_path / "berths.pdf")
    spec = ExtractSpec(
        path=str(path), format="pdf", blob_dir=str(tmp_path / "blobs"), pdf_tables=False
    )
    pages = [dict(r) for r in extract(spec) if r["type"] == "page"]
    assert page_tables(pages) == [[], []]
    assert "Skagerrak Trader" in pages[0]["text"]  # the text is read all the same


def test_pdf_pages_of_plain_text_never_reach_the_table_finder(tmp_path: Path) -> None:
    path = text_pdf(tmp_path / "plain.pdf", ["A page of text.\nAnother line.", "Page two."])
    finder = PdfTableFinder(str(path), None)
    try:
        assert [finder.looks_tabular(i) for i in range(2)] == [False, False]
        assert finder._plumber is None  # pdfplumber was never opened
    finally:
        finder.close()
    ruled = tables.ruled_table_pdf(tmp_path / "ruled.pdf")
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(str(ruled))
    try:
        assert [looks_tabular(document[i]) for i in range(len(document))] == [True, False]
    finally:
        document.close()


@pytest.mark.corpus
def test_corpus_pdf_with_a_ruled_table(corpus: Path, tmp_path: Path) -> None:
    """pdfplumber's own test file: the NICS background checks of November 2015, one page
    with a ruled grid of states and counts."""
    path = corpus / "pdf_text" / "plumber-nics-background-checks-2015-11.pdf"
    pages = run(path, tmp_path)
    found = pages[0]["tables"]
    assert len(found) == 1
    rows = found[0]["rows"]
    # The grid rules every five states: a cell holds five, one a line, as the page shows them.
    assert rows[1][0] == "State / Territory"
    assert rows[2][0].split("\n") == ["Alabama", "Alaska", "Arizona", "Arkansas", "California"]
    assert rows[2][1].split("\n")[0] == "18,870"
    assert rows[13][:3] == ["Totals", "804,006", "671,330"]


def test_rows_are_cleaned_and_bounded() -> None:
    assert clean_rows([["  a  c\n\n b ", None, ""], [], ["", ""], ["x"]]) == [["a c\nb"], ["x"]]
    big = TableRecord(index=0, rows=[["x" * 97] for _ in range(10)])  # 100 chars a row
    small = TableRecord(index=1, rows=[["y"]])
    kept = bound_page([big, small], limit=450)
    assert kept == [{"index": 0, "rows": [["x" * 97]] * 4, "truncated": True}]


def test_rows_follow_the_pages_they_stand_on() -> None:
    pages = ["intro\nalpha 1\nbeta 2", "gamma 3\ndelta 4\nmore", "epsilon 5"]
    rows = [["alpha", "1"], ["beta", "2"], ["gamma", "3"], ["delta", "4"]]
    second = [["epsilon", "5"], ["zeta", "6"]]  # zeta is nowhere: it stays with epsilon
    placed = place_rows(pages, [rows, second])
    assert placed == [
        [{"index": 0, "rows": rows[:2]}],
        [{"index": 0, "rows": rows[2:], "first_row": 2}],
        [{"index": 0, "rows": second}],
    ]
    assert place_rows(pages, [[["nowhere", "at all"]]], only_found=True) == [[], [], []]


def test_the_event_bounds_a_table_and_counts_what_it_weighs() -> None:
    table = Table(index=0, rows=[["a\x00b", "c" * 20_000]])
    assert table.rows[0][0] == "ab" and len(table.rows[0][1]) == 10_000
    page = PageExtracted(job_id="00000000-0000-0000-0000-000000000001", page=1, tables=[table])
    assert page.table_chars == 2 + 3 + 10_000 + 3
    with pytest.raises(ValueError):
        Table(index=0, rows=[])
