"""Documents with tables, made by the tests themselves: a ruled PDF table (reportlab), a Word
table with a merged cell, an HTML page with a data table and a layout table, a CSV longer
than a page. Shared by the unit and the integration tests."""

from __future__ import annotations

from pathlib import Path

# The rows of the PDF and Word tables.
HARBOUR_ROWS = [
    ["Vessel", "Berth", "Tonnage"],
    ["Aurora Borealis", "North 4", "12500"],
    ["Skagerrak Trader", "South 1", "8300"],
    ["Lofoten Spirit", "East 2", "4100"],
]


def ruled_table_pdf(path: Path, rows: list[list[str]] | None = None) -> Path:
    """Page 1: a paragraph and a table ruled on every side of every cell (reportlab's
    platypus Table with a GRID); page 2: text only."""
    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate, Table, TableStyle

    styles = getSampleStyleSheet()
    table = Table(rows or HARBOUR_ROWS)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.75, colors.black)]))
    story = [
        Paragraph("Berth allocation for the week of the regatta.", styles["Normal"]),
        table,
        PageBreak(),
        Paragraph("The harbour master signs the allocation every Monday.", styles["Normal"]),
    ]
    SimpleDocTemplate(str(path), pagesize=A4).build(story)
    return path


def docx_with_table(path: Path) -> Path:
    """A paragraph, a 4 × 3 table whose title row is one merged cell above the header, and
    a closing paragraph."""
    import docx

    document = docx.Document()
    document.add_paragraph("The berth plan for the regatta week follows.")
    table = document.add_table(rows=len(HARBOUR_ROWS) + 1, cols=3)
    title = table.cell(0, 0).merge(table.cell(0, 2))
    title.text = "Berth plan"
    for r, row in enumerate(HARBOUR_ROWS, start=1):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph("Questions go to the harbour office.")
    document.save(str(path))
    return path


HTML_WITH_TABLES = b"""<!DOCTYPE html>
<html lang="en"><head><title>Tide table</title></head><body>
<table class="layout"><tr><td>
  <nav><a href="/">Home</a> <a href="/tides">Tides</a></nav>
  <article>
    <h1>Tides at Bergen harbour</h1>
    <p>The tide table below lists the high and low waters for the first week of May,
    as published by the harbour authority for pilots and visiting yachts.</p>
    <table>
      <tr><th>Day</th><th>High water</th><th>Low water</th></tr>
      <tr><td>Monday</td><td>06:12</td><td>12:40</td></tr>
      <tr><td>Tuesday</td><td>07:01</td><td>13:25</td></tr>
    </table>
    <p>Times are local, and a strong southerly wind raises the water by up to thirty
    centimetres above the figures shown in the table.</p>
  </article>
</td></tr></table>
</body></html>
"""


def long_csv(path: Path, rows: int = 3000) -> Path:
    """A CSV of `rows` data rows under a header: its text is longer than one page."""
    lines = ["ship,port,cargo"]
    lines += [f"Vessel {n},Port {n % 17},Cargo lot {n}" for n in range(1, rows + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path
