"""A result's tables in its Markdown export: in place of the lines that hold their rows, a
continued table under its header again, a table found on no line after the page's text."""

from __future__ import annotations

from typing import Any

from services.ingest.exports import to_markdown


def result(*pages: dict[str, Any]) -> dict[str, Any]:
    return {"job_id": "j", "filename": "plan.docx", "format": "docx", "pages": list(pages)}


def body(markdown: str) -> str:
    """The export after the title and the first page marker."""
    return markdown.split("<!-- page 1 -->\n", 1)[1]


def test_a_word_table_replaces_the_lines_that_hold_its_rows() -> None:
    text = (
        "The berth plan follows.\n\nVessel | Berth\nAurora | North 4\n"
        "Skagerrak | South 1\n\nQuestions go to the office."
    )
    rows = [["Vessel", "Berth"], ["Aurora", "North 4"], ["Skagerrak", "South 1"]]
    page = {"number": 1, "text": text, "tables": [{"index": 0, "rows": rows}]}
    assert body(to_markdown(result(page))) == (
        "\nThe berth plan follows.\n\n\n"
        "| Vessel | Berth |\n|---|---|\n| Aurora | North 4 |\n| Skagerrak | South 1 |\n\n\n"
        "Questions go to the office.\n"
    )


def test_a_table_continued_on_the_next_page_repeats_its_header() -> None:
    first = {
        "number": 1,
        "text": "ship, port\nship: A; port: Oslo",
        "tables": [{"index": 0, "rows": [["ship", "port"], ["A", "Oslo"]]}],
    }
    second = {
        "number": 2,
        "text": "ship: B; port: Rome",
        "tables": [{"index": 0, "rows": [["B", "Rome"]], "first_row": 2}],
    }
    markdown = to_markdown(result(first, second))
    page_two = markdown.split("<!-- page 2 -->\n", 1)[1]
    assert "| ship | port |\n|---|---|\n| B | Rome |" in page_two
    assert "ship: B" not in page_two and "ship: A" not in markdown


def test_a_table_found_on_no_line_follows_the_page_text() -> None:
    cells = [["Alabama\nAlaska", "18,870\n209"], ["Totals", "804,006"]]
    page = {
        "number": 1,
        "text": "NICS checks\nAlabama 18,870",
        "tables": [{"index": 0, "rows": cells}],
    }
    out = body(to_markdown(result(page)))
    assert out.startswith("\nNICS checks\nAlabama 18,870\n")
    assert out.rstrip().endswith(
        "| Alabama<br>Alaska | 18,870<br>209 |\n|---|---|\n| Totals | 804,006 |"
    )


def test_a_page_without_tables_keeps_its_tab_separated_runs() -> None:
    page = {"number": 1, "text": "Sales\n\nRegion\tRevenue\nNorth\t1200"}
    assert "| Region | Revenue |\n|---|---|\n| North | 1200 |" in to_markdown(result(page))
