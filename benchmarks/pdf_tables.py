"""What finding PDF tables costs (docs/decisions/1040-tables-as-data.md).

The extraction child's own code on every text PDF of the corpus, in one process, CPU seconds
(time.process_time), each file read three times in this order, and the best of `--repeat`
rounds kept:

- text: the PDF reader alone (services/extractor/formats/pdf.py, ocr=never): the baseline;
- text + check: the reader and pdfium's check on every page with text, nothing found;
- text + tables: the reader with the table finder as the extractor runs it (pdfium's check on
  every page with text, pdfplumber's finder on the pages that look ruled);
- text + finder on every page: the reader, and pdfplumber's finder on every page with text,
  no check: what the check saves.

Ratios are against the baseline measured in the same run.

    python -m benchmarks.pdf_tables [--repeat N] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, corpus_files
from services.extractor.formats import pdf_tables
from services.extractor.formats.pdf import extract_pdf
from services.extractor.spec import ExtractSpec
from shared.blobstore import BlobStore

OUT = ROOT / "benchmarks" / "results" / "pdf_tables.md"


class CheckOnly(pdf_tables.PdfTableFinder):
    """The check alone: what every page with text pays."""

    def find(self, index: int) -> list[list[list[str]]]:
        return []


class EveryPage(pdf_tables.PdfTableFinder):
    """The finder without its check: pdfplumber on every page with text."""

    def looks_tabular(self, index: int) -> bool:
        self.checked += 1
        return True


def read(
    path: Path, blob_dir: str, finder: type[pdf_tables.PdfTableFinder] | None
) -> dict[str, Any]:
    """One reading of the file; its pages, pages given to pdfplumber and tables found."""
    spec = ExtractSpec(path=str(path), format="pdf", blob_dir=blob_dir, ocr="never")
    records = list(extract_pdf(spec, BlobStore(blob_dir)))
    pages = [r for r in records if r["type"] == "page"]
    searched = tables = 0
    if finder is not None:
        found = finder(str(path), None)
        try:
            for page in pages:
                pdf_tables.page_with_tables(page, found)
                tables += len(page.get("tables", []))
        finally:
            found.close()
        searched = found.searched
    return {"pages": len(pages), "searched": searched, "tables": tables}


def timed(work: Callable[[], dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    started = time.process_time()
    outcome = work()
    return time.process_time() - started, outcome


MODES: dict[str, type[pdf_tables.PdfTableFinder] | None] = {
    "text": None,
    "text + check": CheckOnly,
    "text + tables": pdf_tables.PdfTableFinder,
    "text + finder on every page": EveryPage,
}


def measure(paths: list[Path], repeat: int) -> dict[str, dict[str, Any]]:
    """Per mode: the best total CPU seconds over the rounds, and what it found."""
    best: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="docpipe-tables-") as blob_dir:
        for _ in range(repeat):
            for mode, finder in MODES.items():
                seconds = 0.0
                totals = {"pages": 0, "searched": 0, "tables": 0, "files_with_tables": 0}
                for path in paths:
                    spent, outcome = timed(lambda p=path, f=finder: read(p, blob_dir, f))  # type: ignore[misc]
                    seconds += spent
                    for key in ("pages", "searched", "tables"):
                        totals[key] += outcome[key]
                    totals["files_with_tables"] += bool(outcome["tables"])
                if mode not in best or seconds < best[mode]["seconds"]:
                    best[mode] = {"seconds": seconds, **totals}
    return best


def report(best: dict[str, dict[str, Any]], files: int) -> str:
    base = best["text"]["seconds"]
    pages = best["text"]["pages"]
    lines = [
        f"PDF table finding on {files} corpus text PDFs ({pages} pages), CPU seconds, best of "
        "the rounds (`python -m benchmarks.pdf_tables`):",
        "",
        "| | s | s/page | × text | pages looked at by pdfplumber | tables | files with tables |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, row in best.items():
        lines.append(
            f"| {mode} | {row['seconds']:.2f} | {row['seconds'] / pages:.4f} | "
            f"{row['seconds'] / base:.2f} | {row['searched']} | {row['tables']} | "
            f"{row['files_with_tables']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    paths = corpus_files("pdf_text", (".pdf",))
    read(paths[0], tempfile.gettempdir(), pdf_tables.PdfTableFinder)  # imports, once
    text = report(measure(paths, args.repeat), len(paths))
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
