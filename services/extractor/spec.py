"""What the parent tells the extraction child, and the records the child sends back.

The child reads one ExtractSpec as JSON on stdin and writes one JSON object per line:
a meta record, then one page record per page in order, or a fatal record. The records are
TypedDicts tagged by "type" (`ChildRecord`): plain dicts in the child, checked against these
types by the parent as each line arrives (services/extractor/records.py).

A child of a pool that reuses its children reads one spec per job instead, framed by
shared.sandbox's job protocol (a header line with the spec's length), and ends each job's
records with the sandbox's end-of-job line (`{"type": "done", ...}`); run_sandboxed consumes
that line, so a reader of the records (on_line) never sees it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal, NotRequired

# typing_extensions' TypedDict: pydantic validates it on Python 3.11 (typing's it refuses).
from typing_extensions import TypedDict

ImageKind = Literal["page-scan", "embedded"]


class ImageRecord(TypedDict):
    """An image of a page, stored as a blob, that OCR may read."""

    uri: str
    width: int
    height: int
    kind: ImageKind


class DocumentMeta(TypedDict, total=False):
    """What the document says about itself (PDF info, OOXML docProps, ODF meta.xml, EPUB OPF,
    email headers); dates as ISO 8601 where they parse. Every key is optional."""

    title: str
    author: str
    subject: str
    created: str
    modified: str
    language: str
    producer: str
    page_count: int


class MetaRecord(TypedDict):
    """The first record: the document's format and length, and what it says about itself.
    first_page..last_page (1-based, inclusive) are present only when this child sends part of
    the document."""

    type: Literal["meta"]
    format: str
    pages_total: int
    first_page: NotRequired[int]
    last_page: NotRequired[int]
    metadata: NotRequired[DocumentMeta]


class HeadingRecord(TypedDict):
    """A heading as it stands in the page's text (one line of it), and its level (1-6)."""

    level: int
    text: str


class TableRecord(TypedDict):
    """A table's rows of cells on a page (shared.events.Table): its index in the document, and
    where a table continues from the page before, the position of this part's first row."""

    index: int
    rows: list[list[str]]
    first_row: NotRequired[int]
    truncated: NotRequired[bool]


class PageRecord(TypedDict):
    """One page: its text layer and the images it needs OCRed; `error` when the page (not the
    document) could not be read; `headings` where the format marks them; `tables` where it has
    tables."""

    type: Literal["page"]
    page: int
    text: str
    has_text_layer: bool
    images: list[ImageRecord]
    error: str | None
    headings: NotRequired[list[HeadingRecord]]
    tables: NotRequired[list[TableRecord]]


class FatalRecord(TypedDict):
    """The document cannot be extracted; `reason` is shown to a person as it is."""

    type: Literal["fatal"]
    reason: str


# What a format extractor yields, and what the child writes (the former plus a fatal record).
FormatRecord = MetaRecord | PageRecord
ChildRecord = MetaRecord | PageRecord | FatalRecord


class ExtractionFatal(Exception):
    """The whole document cannot be extracted; `reason` is shown to a person as it is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# A format without pages of its own (TXT, CSV, HTML, Markdown, a DOCX between its breaks) is cut
# into pages of at most this many characters: DOCPIPE_FLOWING_PAGE_CHARS (docs/decisions/0990).
FLOWING_PAGE_CHARS_DEFAULT = 50_000


@dataclass(frozen=True)
class ExtractSpec:
    path: str
    format: str
    blob_dir: str
    password: str | None = field(default=None, repr=False)  # opened from the event's token
    ocr: str = "auto"  # auto | always | never
    max_pages: int = 2000
    max_image_pixels: int = 80_000_000
    max_extracted_chars: int = 20_000_000
    ocr_dpi: int = 300
    ocr_min_image_side: int = 48
    ocr_min_image_area: int = 10_000
    # Page range (0-based, stop exclusive) of a child working on part of a PDF; see
    # formats.pdf.page_range. split_pages: a PDF this long is split between two children.
    page_start: int = 0
    page_stop: int | None = None
    split_pages: int = 0
    # A document longer than this runs at a lower CPU priority (nice), so small documents
    # and the downstream services keep moving while it is extracted; 0 disables.
    nice_above_pages: int = 0
    flowing_page_chars: int = FLOWING_PAGE_CHARS_DEFAULT
    # A PDF's ruled tables are found and sent as rows of cells (DOCPIPE_PDF_TABLES).
    pdf_tables: bool = True
    # A DOCX's comments are read (after the text of the page they are on) only when asked for.
    docx_comments: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ExtractSpec:
        raw = json.loads(data)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def meta_record(
    fmt: str,
    pages_total: int,
    *,
    first_page: int = 1,
    last_page: int | None = None,
    metadata: DocumentMeta | None = None,
) -> MetaRecord:
    """first_page..last_page (1-based, inclusive): the pages this child will send, present
    only when that is not the whole document. `metadata`: left out when empty."""
    record = MetaRecord(type="meta", format=fmt, pages_total=pages_total)
    if metadata:
        record["metadata"] = metadata
    last = pages_total if last_page is None else last_page
    if (first_page, last) != (1, pages_total):
        record["first_page"] = first_page
        record["last_page"] = last
    return record


def image_record(uri: str, width: int, height: int, kind: ImageKind) -> ImageRecord:
    return {"uri": uri, "width": width, "height": height, "kind": kind}


def page_record(
    page: int,
    text: str,
    *,
    has_text_layer: bool,
    images: list[ImageRecord] | None = None,
    error: str | None = None,
    headings: list[HeadingRecord] | None = None,
    tables: list[TableRecord] | None = None,
) -> PageRecord:
    record: PageRecord = {
        "type": "page",
        "page": page,
        "text": text,
        "has_text_layer": has_text_layer,
        "images": images or [],
        "error": error,
    }
    if headings:
        record["headings"] = headings
    if tables:
        record["tables"] = tables
    return record


def fatal_record(reason: str) -> FatalRecord:
    return {"type": "fatal", "reason": reason}
