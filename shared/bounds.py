"""Bounds of every field on the bus (shared.events): a message is validated before anything
reads it, so an oversized field is refused there, never stored (a 50 MB filename once was)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field

TENANT_MAX = 64
URI_MAX = 4096
FILENAME_MAX = 255  # as over HTTP (services.ingest.filenames)
CONTENT_TYPE_MAX = 255
PASSWORD_MAX = 1024  # as over HTTP (services.ingest.models)
# A document password travels encrypted (shared.secret_box): the Fernet token of the longest
# password, 1024 characters of 4 UTF-8 bytes each (57 bytes of header, IV and HMAC around
# 4112 bytes of padded ciphertext, in url-safe base64).
PASSWORD_TOKEN_MAX = 5560
FORMAT_MAX = 32
NAME_MAX = 64  # a stage, a language code, an analyzer's name
REASON_MAX = 4000
# Chunks are cut at chunk_max_chars (1200 by default): this leaves room for a larger setting.
CHUNK_TEXT_MAX = 20_000
# A page's text is at most the whole document's: the extractor's max_extracted_chars default.
PAGE_TEXT_MAX = 20_000_000
# Lists: far above what one message carries (a batch is at most extract_batch_max_pages).
PAGES_PER_MESSAGE_MAX = 1000
# Headings one page may name (a whole ODT or DOCX is one page); more are left out.
HEADINGS_PER_PAGE_MAX = 5000
IMAGES_PER_PAGE_MAX = 10_000
# Tables as data (a page's `tables`): what one page may carry. The extractor keeps a page's
# tables within TABLE_CHARS_PER_PAGE_MAX characters of cells (services/extractor/formats/
# tables.py, leaving the rest out and saying so), so they add a bounded amount to a message;
# the model's own bounds are the last line of defence.
TABLES_PER_PAGE_MAX = 1000
TABLE_ROWS_MAX = 100_000
TABLE_COLUMNS_MAX = 1000  # as the XLSX reader's columns per row
TABLE_CELL_MAX = 10_000  # a cell is cut here, with "…", rather than refused
TABLE_CHARS_PER_PAGE_MAX = 500_000
CHUNKS_PER_MESSAGE_MAX = 100_000
KEYWORDS_MAX = 1000
ENTITIES_MAX = CHUNK_TEXT_MAX  # never more entities than characters


def _cut_to(limit: int) -> BeforeValidator:
    def cut(value: object) -> object:
        return value[: limit - 1] + "…" if isinstance(value, str) and len(value) > limit else value

    return BeforeValidator(cut)


# C0 controls but tab, newline and carriage return. PostgreSQL stores no NUL in text nor
# "\u0000" in jsonb, and documents do carry them: a PDF's /Title is often a NUL-terminated
# string. Removed where a document's own words become a field stored as it is.
_CONTROLS = {c: None for c in range(32) if chr(c) not in "\t\n\r"}


def _without_controls() -> BeforeValidator:
    def strip(value: object) -> object:
        return value.translate(_CONTROLS) if isinstance(value, str) else value

    return BeforeValidator(strip)


# A sentence for a person (why a job or a page failed): cut to its bound rather than refused,
# so reporting a failure can never fail.
Reason = Annotated[str, _cut_to(REASON_MAX), _without_controls(), Field(max_length=REASON_MAX)]
Tenant = Annotated[str, Field(min_length=1, max_length=TENANT_MAX)]
Uri = Annotated[str, Field(min_length=1, max_length=URI_MAX)]
Format = Annotated[str, Field(max_length=FORMAT_MAX)]
Name = Annotated[str, Field(max_length=NAME_MAX)]
# A document's own metadata value (a title, an author): cut rather than refused, and without
# control characters.
META_VALUE_MAX = 1000
MetaValue = Annotated[
    str, _cut_to(META_VALUE_MAX), _without_controls(), Field(max_length=META_VALUE_MAX)
]
# A table cell's text: cut rather than refused, and without control characters (a cell is a
# document's own words stored as they are).
TableCell = Annotated[
    str, _cut_to(TABLE_CELL_MAX), _without_controls(), Field(max_length=TABLE_CELL_MAX)
]
