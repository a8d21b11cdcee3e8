"""DOCX: body paragraphs and tables in document order, as one page.

Word documents have no fixed pagination (page breaks depend on the renderer), so the whole
document is page 1. python-docx parses with lxml set not to resolve entities or fetch
anything, so an external entity in the XML (XXE) stays unresolved.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any

from services.extractor.formats import Record, check_chars
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractionFatal, ExtractSpec, meta_record, page_record

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"


def _cell_text(cell: Any) -> str:
    return " ".join(p.text.strip() for p in cell.paragraphs if p.text.strip())


def table_lines(table: Any) -> list[str]:
    """One line per row, cells joined by ' | '; a merged cell is shown once."""
    lines: list[str] = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if previous is not None and cell._tc is previous:
                continue  # python-docx repeats a horizontally merged cell
            previous = cell._tc
            cells.append(_cell_text(cell))
        if any(cells):
            lines.append(" | ".join(cells))
    return lines


def document_blocks(document: Any) -> Iterator[str]:
    """Paragraph and table text in body order (headings are paragraphs and are kept)."""
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in document.element.body.iterchildren():
        if child.tag == _W + "p":
            text = Paragraph(child, document).text.strip()
            if text:
                yield text
        elif child.tag == _W + "tbl":
            lines = table_lines(Table(child, document))
            if lines:
                yield "\n".join(lines)


def open_docx(path: str) -> Any:
    import docx

    try:
        with zipfile.ZipFile(path) as zf:
            if "word/document.xml" not in zf.namelist():
                raise ExtractionFatal("The file is a ZIP archive but not a Word document.")
        return docx.Document(path)
    except ExtractionFatal:
        raise
    except zipfile.BadZipFile as exc:
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {exc}."
        ) from exc
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {detail}."
        ) from exc


def extract_docx(spec: ExtractSpec) -> Iterator[Record]:
    document = open_docx(spec.path)
    parts: list[str] = []
    total = 0
    try:
        for block in document_blocks(document):
            total += len(block) + 2
            check_chars(total, spec)
            parts.append(block)
    except ExtractionFatal:
        raise
    except Exception as exc:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise ExtractionFatal(
            f"The Word document is damaged and could not be read: {detail}."
        ) from exc
    text = normalize_text("\n\n".join(parts))
    yield meta_record("docx", 1)
    yield page_record(1, text, has_text_layer=bool(text))
