"""The extractor's handler: DocumentUploaded in; ExtractionStarted, ChunkCreated,
ImagesExtracted and PageExtracted out, as the sandboxed child produces each page."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from services.extractor.fetch import resolve_document
from services.extractor.spec import ExtractSpec
from shared import topology
from shared.bus import Bus, Delivery, Handler
from shared.chunking import make_chunks
from shared.errors import JobGone, PermanentError
from shared.events import (
    ChunkCreated,
    DocumentUploaded,
    Event,
    ExtractionStarted,
    ImageRef,
    ImagesExtracted,
    PageExtracted,
    PageSource,
    derive_id,
)
from shared.jobs import ensure_job, require_active
from shared.sandbox import run_sandboxed
from shared.service import ServiceContext
from shared.settings import Settings
from shared.sniff import sniff_path, unsupported_reason

log = structlog.get_logger(__name__)

CHILD_ARGV = (sys.executable, "-m", "services.extractor.child")


def detect_format(path: Path) -> str:
    """The sniffed format, or PermanentError with a sentence saying why it cannot be read."""
    if path.stat().st_size == 0:
        raise PermanentError("The document is empty (0 bytes).")
    fmt = sniff_path(path)
    if fmt is not None:
        return fmt
    raise PermanentError(unsupported_reason(path))


def build_spec(path: Path, fmt: str, event: DocumentUploaded, settings: Settings) -> ExtractSpec:
    return ExtractSpec(
        path=str(path),
        format=fmt,
        blob_dir=str(Path(settings.blob_dir).resolve()),
        password=event.password,
        ocr=event.ocr.value,
        max_pages=settings.max_pages,
        max_image_pixels=settings.max_image_pixels,
        max_extracted_chars=settings.max_extracted_chars,
        ocr_dpi=settings.ocr_dpi,
        ocr_min_image_side=settings.ocr_min_image_side,
        ocr_min_image_area=settings.ocr_min_image_area,
    )


def page_events(event: DocumentUploaded, record: dict[str, Any], settings: Settings) -> list[Event]:
    """The events one page record becomes, in publishing order: chunks, images, the page."""
    page = int(record["page"])
    text = str(record.get("text") or "")
    chunks = make_chunks(event.job_id, page, PageSource.TEXT_LAYER, text, settings.chunk_max_chars)
    out: list[Event] = [ChunkCreated(job_id=event.job_id, chunk=c) for c in chunks]
    images = [
        ImageRef(
            image_id=derive_id(event.job_id, "image", page, i),
            uri=img["uri"],
            width=int(img["width"]),
            height=int(img["height"]),
            kind=img.get("kind", "embedded"),
        )
        for i, img in enumerate(record.get("images") or [])
    ]
    if images:
        out.append(
            ImagesExtracted(job_id=event.job_id, page=page, images=images, lang=settings.ocr_lang)
        )
    out.append(
        PageExtracted(
            job_id=event.job_id,
            page=page,
            text=text,
            has_text_layer=bool(record.get("has_text_layer")),
            ocr_pending=bool(images),
            chunks_total=len(chunks),
            error=record.get("error"),
        )
    )
    return out


@dataclass
class ExtractionRun:
    """Turns the child's lines into published events as they arrive."""

    event: DocumentUploaded
    bus: Bus
    settings: Settings
    fetched_uri: str | None = None
    pages_total: int | None = None
    pages_done: int = 0
    fatal: str | None = None

    async def publish(self, ev: Event) -> None:
        await self.bus.publish(ev, priority=self.event.priority)

    async def on_line(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            kind = record["type"]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed line from the child", line=line[:200])
            return
        if self.fatal is not None:
            return
        if kind == "meta":
            self.pages_total = int(record["pages_total"])
            await self.publish(
                ExtractionStarted(
                    job_id=self.event.job_id,
                    format=str(record["format"]),
                    pages_total=self.pages_total,
                    document_uri=self.fetched_uri,
                )
            )
        elif kind == "page":
            for ev in page_events(self.event, record, self.settings):
                await self.publish(ev)
            self.pages_done += 1
        elif kind == "fatal":
            self.fatal = str(record.get("reason") or "The document could not be read.")


async def handle_document(ctx: ServiceContext, event: DocumentUploaded) -> None:
    settings = ctx.settings
    await ensure_job(ctx.pool, event)
    await require_active(ctx.pool, event.job_id)
    doc = await resolve_document(event.document_uri, settings, ctx.blobs)
    fmt = await asyncio.to_thread(detect_format, doc.path)
    spec = build_spec(doc.path, fmt, event, settings)
    run = ExtractionRun(event, ctx.bus, settings, fetched_uri=doc.fetched_uri)
    result = await run_sandboxed(
        CHILD_ARGV,
        job_id=event.job_id,
        timeout=settings.extract_timeout_seconds,
        cpu_seconds=settings.extract_cpu_seconds,
        memory_mb=settings.extract_memory_mb,
        stdin=spec.to_json(),
        on_line=run.on_line,
    )
    if result.failure is not None:
        if "cancelled" in result.failure.lower():
            raise JobGone(result.failure)
        log.warning("extraction child failed", failure=result.failure, stderr=result.stderr[-2000:])
        raise PermanentError(result.failure)
    if run.fatal is not None:
        raise PermanentError(run.fatal)
    if run.pages_total is None or run.pages_done < run.pages_total:
        log.error("extraction child ended early", stderr=result.stderr[-2000:])
        raise PermanentError(
            f"Extraction stopped after {run.pages_done} of {run.pages_total or '?'} pages."
        )
    log.info("document extracted", format=fmt, pages=run.pages_done)


def make_handler(ctx: ServiceContext) -> Handler:
    async def handler(event: Event, delivery: Delivery) -> None:
        assert isinstance(event, DocumentUploaded)
        await handle_document(ctx, event)

    return handler


async def setup(ctx: ServiceContext) -> None:
    ctx.bus.subscribe(
        topology.EXTRACTOR, make_handler(ctx), prefetch=ctx.settings.extractor_concurrency
    )
