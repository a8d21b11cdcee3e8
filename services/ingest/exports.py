"""A job's result as Markdown or plain text, rendered from the stored JSON result. Pure.

Markdown: a title heading (the document's title, else its file name), the metadata the
document gave as a list, then each page after a `<!-- page N -->` marker (a Markdown document
gets no title or list: its own headings come first). The lines a page names as its
headings (the result's `headings`) are marked at their level; the rest is the page text as the
extractor kept it: a Markdown document's headings and lists as written, list items of
OpenDocument text (`- `). A page's tables (the result's `tables`: rows of cells) are Markdown
tables in place of the lines that hold their rows (services/ingest/export_tables.py); other
runs of tab-separated lines (slides' tables) are Markdown tables too.

Text: each page's text (OCR text after it), pages separated by a form feed line, as
pdftotext does.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum
from typing import Any

from services.ingest.export_tables import TableHeaders, place_tables


class ExportFormat(StrEnum):
    JSON = "json"
    MARKDOWN = "markdown"
    TEXT = "text"


MEDIA_TYPES = {
    ExportFormat.JSON: "application/json",
    ExportFormat.MARKDOWN: "text/markdown; charset=utf-8",
    ExportFormat.TEXT: "text/plain; charset=utf-8",
}
PAGE_SEPARATOR = "\n\f\n"
_META_LABELS = (
    ("author", "Author"),
    ("subject", "Subject"),
    ("created", "Created"),
    ("modified", "Modified"),
    ("language", "Language"),
    ("producer", "Producer"),
    ("page_count", "Pages"),
)


def page_texts(page: Mapping[str, Any]) -> list[str]:
    return [t for t in (page.get("text"), page.get("ocr_text")) if t]


def to_text(result: Mapping[str, Any]) -> str:
    pages = result.get("pages") or []
    return PAGE_SEPARATOR.join("\n\n".join(page_texts(p)) for p in pages) + "\n"


def _cell(value: str) -> str:
    """A cell in a Markdown table row: pipes escaped, its own line breaks as <br>."""
    escaped = value.strip().replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(line.strip() for line in escaped.split("\n")) or " "


def markdown_table(rows: list[list[str]]) -> list[str]:
    width = max(len(r) for r in rows)
    padded = [r + [""] * (width - len(r)) for r in rows]
    lines = ["| " + " | ".join(_cell(c) for c in padded[0]) + " |"]
    lines.append("|" + "---|" * width)
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in padded[1:]]
    return lines


def _words(text: str) -> str:
    return " ".join(text.split())


def markdown_blocks(
    text: str,
    headings: list[Mapping[str, Any]] | None = None,
    tables: list[Mapping[str, Any]] | None = None,
    table_headers: TableHeaders | None = None,
) -> Iterator[str]:
    """The page's lines: those that are the page's headings (matched in order) marked as
    Markdown headings; the page's tables in place of the lines that hold their rows (those
    found on no line after the text); other runs of two or more tab-separated lines turned
    into tables."""
    wanted = [(_words(str(h.get("text", ""))), int(h.get("level", 1))) for h in headings or []]
    run: list[list[str]] = []
    lines = text.split("\n")
    placed, unplaced = place_tables(lines, tables or [], table_headers or TableHeaders())
    skip_to = 0
    for number, line in enumerate(lines):
        if number < skip_to:
            continue
        if number in placed:
            if run:
                yield from (markdown_table(run) if len(run) > 1 else ["  ".join(run[0])])
                run = []
            skip_to, rows = placed[number]
            yield from ["", *markdown_table(rows), ""]
            continue
        if wanted and line.strip() and _words(line) == wanted[0][0]:
            level = min(max(wanted.pop(0)[1], 1), 6)
            if run:
                yield from (markdown_table(run) if len(run) > 1 else ["  ".join(run[0])])
                run = []
            yield f"{'#' * level} {_words(line)}"
            continue
        if "\t" in line:
            run.append(line.split("\t"))
            continue
        if run:
            yield from (markdown_table(run) if len(run) > 1 else ["  ".join(run[0])])
            run = []
        yield line
    if run:
        yield from (markdown_table(run) if len(run) > 1 else ["  ".join(run[0])])
    for rows in unplaced:
        yield from ["", *markdown_table(rows)]


def to_markdown(result: Mapping[str, Any]) -> str:
    metadata = result.get("metadata") or {}
    title = metadata.get("title") or result.get("filename") or str(result.get("job_id", ""))
    out: list[str] = []
    # A Markdown document is its own export: no title or facts above its own headings.
    if result.get("format") != "md":
        out += [f"# {' '.join(str(title).split())}", ""]
        facts = [f"- {label}: {metadata[key]}" for key, label in _META_LABELS if metadata.get(key)]
        if facts:
            out += [*facts, ""]
    if result.get("partial"):
        out += ["<!-- partial result: the job did not complete -->", ""]
    table_headers = TableHeaders()  # a table continued on the next page repeats its header
    for page in result.get("pages") or []:
        out.append(f"<!-- page {page.get('number')} -->")
        out.append("")
        texts = page_texts(page) or ([""] if page.get("tables") else [])
        for index, text in enumerate(texts):
            # The headings and tables are the text layer's.
            headings = page.get("headings") if index == 0 else None
            tables = page.get("tables") if index == 0 else None
            out += list(markdown_blocks(text, headings, tables, table_headers))
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render(result: Any, fmt: ExportFormat) -> str:
    """The result in `fmt` (Markdown or text); a result that is not an object renders empty."""
    if not isinstance(result, Mapping):
        return ""
    return to_markdown(result) if fmt is ExportFormat.MARKDOWN else to_text(result)
