"""Per-format extraction: pure functions that yield a meta record, then one record per page.

They raise spec.ExtractionFatal for a document that cannot be read at all. They run inside the
sandboxed child (services.extractor.child), never in the service's event loop.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator

from services.extractor.spec import (
    FLOWING_PAGE_CHARS_DEFAULT,
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    FormatRecord,
    HeadingRecord,
    TableRecord,
    meta_record,
    page_record,
)
from shared.blobstore import BlobStore
from shared.chunking import chunk_spans
from shared.sandbox import limit_reason

# What every format extractor yields: a meta record, then page records.
Record = FormatRecord

# Formats without pages of their own (plain text, CSV, HTML, Markdown, DOCX between its breaks)
# are cut into pages of at most spec.flowing_page_chars characters (this by default), at
# paragraph (else sentence, else word) boundaries. A page is what one bus message carries and
# what the analyzer and progress hold at once, so its size bounds their memory whatever the
# document's length (docs/decisions/0990, 1020).
TEXT_PAGE_MAX_CHARS = FLOWING_PAGE_CHARS_DEFAULT


# Each format's reader: its module under services.extractor.formats and its function, which
# takes the spec (and the blob store, for the formats that store page images).
_READERS: dict[str, tuple[str, str]] = {
    "pdf": ("pdf", "extract_pdf"),
    "docx": ("docx", "extract_docx"),
    "html": ("html", "extract_html"),
    "csv": ("csv_text", "extract_csv"),
    "txt": ("plain", "extract_txt"),
    "xlsx": ("xlsx", "extract_xlsx"),
    "pptx": ("pptx", "extract_pptx"),
    "odt": ("opendocument", "extract_opendocument"),
    "ods": ("opendocument", "extract_opendocument"),
    "odp": ("opendocument", "extract_opendocument"),
    "epub": ("epub", "extract_epub"),
    "eml": ("eml", "extract_eml"),
    "rtf": ("rtf", "extract_rtf"),
    "md": ("markdown", "extract_markdown"),
    "doc": ("legacy", "extract_legacy"),
    "xls": ("legacy", "extract_legacy"),
    "ppt": ("legacy", "extract_legacy"),
    "png": ("image", "extract_image"),
    "jpeg": ("image", "extract_image"),
    "tiff": ("image", "extract_image"),
}
_STORE_IMAGES = {"pdf", "png", "jpeg", "tiff"}


def extract(spec: ExtractSpec) -> Iterator[Record]:
    """Dispatch on the sniffed format; imports are lazy so the child loads only what it needs."""
    reader = _READERS.get(spec.format)
    if reader is None:
        raise ExtractionFatal(f"The {spec.format!r} format is not supported.")
    module, function = reader
    read = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    if spec.format in _STORE_IMAGES:
        records: Iterator[Record] = read(spec, BlobStore(spec.blob_dir))
    else:
        records = read(spec)
    if spec.format == "pdf" and spec.pdf_tables:  # tables as data, beside the PDF's text
        from services.extractor.formats.pdf_tables import with_tables

        records = with_tables(spec, records)
    return records


def text_pages(text: str, max_chars: int = TEXT_PAGE_MAX_CHARS) -> list[str]:
    """The text as consecutive pages of at most max_chars, cut between paragraphs where it
    can be; one empty page for no text (the document still has a page to report)."""
    return [text[start:end] for start, end in chunk_spans(text, max_chars)] or [""]


def paged_text_records(
    fmt: str,
    text: str,
    max_chars: int,
    *,
    metadata: DocumentMeta | None = None,
    headings: list[HeadingRecord] | None = None,
    tables: list[list[list[str]]] | None = None,
    only_found_tables: bool = False,
) -> Iterator[Record]:
    """The meta record and the page records of a format without pages of its own."""
    yield from paged_section_records(
        fmt,
        [text],
        max_chars,
        metadata=metadata,
        headings=headings,
        tables=tables,
        only_found_tables=only_found_tables,
    )


def paged_section_records(
    fmt: str,
    sections: list[str],
    max_chars: int,
    *,
    metadata: DocumentMeta | None = None,
    headings: list[HeadingRecord] | None = None,
    tables: list[list[list[str]]] | None = None,
    only_found_tables: bool = False,
) -> Iterator[Record]:
    """The meta record and the page records of a text in sections that each start a page
    (a DOCX's page and section breaks), each cut into pages of at most max_chars. Each
    heading goes with the page its text is found on, in document order (one not found there
    stays pending; whatever is left goes with the last page); each table row likewise
    (formats.tables.place_rows)."""
    from services.extractor.formats.tables import place_rows

    pages = [page for text in sections if text for page in text_pages(text, max_chars)] or [""]
    placed: list[list[TableRecord]] = (
        place_rows(pages, tables, only_found=only_found_tables) if tables else []
    )
    yield meta_record(fmt, len(pages), metadata=metadata)
    pending = list(headings or [])
    for number, page in enumerate(pages, start=1):
        here: list[HeadingRecord] = []
        at = 0
        while pending and (found := page.find(pending[0]["text"], at)) >= 0:
            at = found + len(pending[0]["text"])
            here.append(pending.pop(0))
        if number == len(pages):
            here += pending
        page_tables = placed[number - 1] if placed else None
        yield page_record(
            number, page, has_text_layer=bool(page), headings=here or None, tables=page_tables
        )


def check_chars(total: int, spec: ExtractSpec) -> None:
    """Fail once the text extracted so far exceeds the limit."""
    if total > spec.max_extracted_chars:
        raise ExtractionFatal(
            f"The document has more text than the limit of {spec.max_extracted_chars} characters."
        )


def short(exc: BaseException, limit: int = 160) -> str:
    """A one-line description of an exception for a person to read."""
    detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if len(detail) > limit:
        detail = detail[: limit - 1] + "…"
    return detail


def fatal_if_limit(exc: BaseException) -> None:
    """Raise ExtractionFatal when `exc` is a sandbox limit reached (a file too large, too many
    open files): the document is over a limit, not one page damaged."""
    if isinstance(exc, OSError) and (reason := limit_reason(exc)) is not None:
        raise ExtractionFatal(reason) from exc
