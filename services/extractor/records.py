"""The parent's side of the extraction child's records: each stdout line is checked against
spec.ChildRecord (a union tagged by "type") as it crosses the process boundary, and a page or
meta record becomes what the events carry."""

from __future__ import annotations

from typing import Annotated

import structlog
from pydantic import Field, TypeAdapter, ValidationError

from services.extractor.spec import ChildRecord, MetaRecord, PageRecord
from shared.bounds import HEADINGS_PER_PAGE_MAX, TABLES_PER_PAGE_MAX
from shared.chunking import make_chunks
from shared.events import (
    DocumentMetadata,
    DocumentUploaded,
    Event,
    Heading,
    ImageRef,
    ImagesExtracted,
    PageExtracted,
    PageSource,
    Table,
    derive_id,
)
from shared.settings import Settings

log = structlog.get_logger(__name__)

_RECORD: TypeAdapter[ChildRecord] = TypeAdapter(Annotated[ChildRecord, Field(discriminator="type")])


def parse_record(line: bytes) -> ChildRecord | None:
    """The record on one line of the child's output, or None when it is not one."""
    try:
        return _RECORD.validate_json(line)
    except ValidationError:
        return None


def page_events(event: DocumentUploaded, record: PageRecord, settings: Settings) -> list[Event]:
    """The events one page record becomes, in publishing order: images, then the page."""
    page = record["page"]
    text = record["text"]
    chunks = make_chunks(event.job_id, page, PageSource.TEXT_LAYER, text, settings.chunk_max_chars)
    out: list[Event] = []
    images = [
        ImageRef(
            image_id=derive_id(event.job_id, "image", page, i),
            uri=img["uri"],
            width=img["width"],
            height=img["height"],
            kind=img["kind"],
        )
        for i, img in enumerate(record["images"])
    ]
    if images:
        lang = event.ocr_lang or settings.ocr_lang  # the job's languages, else the deployment's
        out.append(ImagesExtracted(job_id=event.job_id, page=page, images=images, lang=lang))
    out.append(
        PageExtracted(
            job_id=event.job_id,
            page=page,
            text=text,
            has_text_layer=record["has_text_layer"],
            ocr_pending=bool(images),
            chunks=chunks,
            error=record["error"],
            headings=[
                Heading(level=h["level"], text=h["text"])
                for h in record.get("headings", [])[:HEADINGS_PER_PAGE_MAX]
            ],
            tables=[
                Table.model_validate(t) for t in record.get("tables", [])[:TABLES_PER_PAGE_MAX]
            ],
        )
    )
    return out


def document_metadata(record: MetaRecord) -> DocumentMetadata | None:
    """The meta record's metadata as the event carries it (values past their bound cut);
    None when the document says nothing about itself."""
    raw = record.get("metadata")
    if not raw:
        return None
    try:
        return DocumentMetadata.model_validate(raw)
    except ValidationError:
        log.warning("ignored malformed document metadata from the child")
        return None
