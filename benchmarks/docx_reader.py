"""What reading a DOCX whole costs (docs/decisions/1020-docx-whole-and-pages.md).

A generated Word document (paragraphs with a page break every 10, tables, footnotes and a
text box per page) read in this process, in CPU seconds (best of 3): the bare python-docx loop
that reads only body paragraphs and tables (the baseline, measured in the same run), and the
extractor's DOCX reader (services/extractor/formats/docx.py), which also reads notes, text
boxes, content controls, headers and footers and pages the text. The figure is the ratio.

    python -m benchmarks.docx_reader [--paragraphs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.extractor.formats import extract
from services.extractor.spec import ExtractSpec
from tests.unit.docx_fixtures import add_notes_part, append_body, para, text_box

SENTENCE = "The harbour master counts the boats in the morning and writes the tides down. "


def make_document(path: Path, paragraphs: int) -> Path:
    import docx
    from docx.enum.text import WD_BREAK

    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Harbour report"
    notes: dict[int, str] = {}
    for i in range(paragraphs):
        if i % 10 == 5:
            notes[i] = f"Note {i} on the tides."
            append_body(
                document,
                "<w:p>"
                + para(f"{i} {SENTENCE * 5}")
                + f"<w:r><w:footnoteReference w:id='{i}'/></w:r>"
                + text_box(f"Box {i}")
                + "</w:p>",
            )
            continue
        paragraph = document.add_paragraph(f"{i} " + SENTENCE * 6)
        if i % 10 == 9:
            paragraph.runs[0].add_break(WD_BREAK.PAGE)
        if i % 50 == 0:
            table = document.add_table(rows=3, cols=3)
            for cell in table._cells:
                cell.text = "cell value"
    add_notes_part(document, "footnote", notes)
    document.save(str(path))
    return path


def bare_python_docx(path: Path) -> int:
    """Body paragraphs and table cells through python-docx's objects: what a plain reader does."""
    import docx

    document = docx.Document(str(path))
    total = sum(len(p.text) for p in document.paragraphs)
    for table in document.tables:
        total += sum(len(cell.text) for row in table.rows for cell in row.cells)
    return total


def docpipe_reader(path: Path) -> int:
    spec = ExtractSpec(path=str(path), format="docx", blob_dir=str(path.parent / "blobs"))
    return sum(len(r["text"]) for r in extract(spec) if r["type"] == "page")


def best_cpu(read: Callable[[Path], Any], path: Path, tries: int = 3) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(tries):
        start = time.process_time()
        out = read(path)
        best = min(best, time.process_time() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--paragraphs", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = make_document(Path(tmp) / "bench.docx", args.paragraphs)
        bare, bare_chars = best_cpu(bare_python_docx, path)
        ours, our_chars = best_cpu(docpipe_reader, path)
    print("| reader | CPU s | characters | ratio |")
    print("|---|---|---|---|")
    print(f"| bare python-docx loop | {bare:.3f} | {bare_chars} | 1.00 |")
    print(f"| docpipe DOCX reader | {ours:.3f} | {our_chars} | {ours / bare:.2f} |")


if __name__ == "__main__":
    main()
