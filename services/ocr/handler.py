"""images.extracted -> page.ocred, carrying the OCR text and its chunks.

One message is one page. A failure on one image is a page-level failure: the page reports the
error and whatever text the other images gave, and the job carries on. A missing blob can never
succeed, so it fails the job.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from services.ocr import metrics
from services.ocr.tesseract import OcrResult, join_page_text, ocr_image, valid_lang
from shared.blobstore import Blobs, pinned_file
from shared.bus import Delivery, Handler
from shared.chunking import make_chunks
from shared.errors import JobGone, PermanentError
from shared.events import ImageRef, ImagesExtracted, PageOcred, PageSource
from shared.jobs import require_active
from shared.sandbox import WarmPool
from shared.service import ServiceContext
from shared.settings import Settings

log = structlog.get_logger(__name__)


def too_small(image: ImageRef, settings: Settings) -> bool:
    """Icons, bullets and rules: not worth a tesseract run."""
    side = settings.ocr_min_image_side
    return (
        image.width < side
        or image.height < side
        or image.width * image.height < settings.ocr_min_image_area
    )


def page_lang(event: ImagesExtracted, settings: Settings) -> str:
    """The page's OCR language, or PermanentError when it is not a language code at all."""
    lang = event.lang or settings.ocr_lang
    if not valid_lang(lang):
        raise PermanentError(f"'{lang}' is not a valid OCR language code.")
    return lang


def image_file(
    blobs: Blobs, image: ImageRef, number: int, page: int
) -> contextlib.AbstractAsyncContextManager[Path]:
    """The image's local file while the block runs (fetched from a remote store and held in
    its cache), or PermanentError: a missing image never comes back."""
    missing = f"Image {number} of page {page} is missing from storage, so the page cannot be OCRed."
    return pinned_file(blobs, image.uri, missing=missing)


@dataclass
class PageOcr:
    """What OCR made of one page's images so far."""

    texts: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    ocred: int = 0
    skipped: int = 0
    rotated: int = 0
    seconds: float = 0.0
    # Over every recognised word of the page's images: the sum of their confidences, and their
    # number (the page's confidence is the mean over its words, not over its images).
    confidence_sum: float = 0.0
    words: int = 0

    def add_reading(self, result: OcrResult) -> None:
        if result.text:
            self.texts.append(result.text)
        if result.confidence is not None and result.words:
            self.confidence_sum += result.confidence * result.words
            self.words += result.words
        if result.rotated:
            self.rotated += 1

    @property
    def confidence(self) -> float | None:
        if not self.words:
            return None
        return round(min(100.0, max(0.0, self.confidence_sum / self.words)), 1)

    def event(self, images: ImagesExtracted, settings: Settings) -> PageOcred:
        """The page.ocred that reports this page: its text, chunks, counts and errors."""
        text = join_page_text(self.texts)
        job_id, page = images.job_id, images.page
        chunks = make_chunks(job_id, page, PageSource.OCR, text, settings.chunk_max_chars)
        error = f"Page {page}: " + " ".join(self.errors) if self.errors else None
        return PageOcred(
            job_id=job_id,
            page=page,
            text=text,
            chunks=chunks,
            images_ocred=self.ocred,
            images_skipped=self.skipped,
            images_rotated=self.rotated,
            ocr_seconds=round(self.seconds, 3),
            confidence=self.confidence,
            error=error,
        )


@dataclass(frozen=True)
class OcrRuntime:
    """What the OCR handler keeps for the life of the service."""

    engine: WarmPool  # the children that run tesseract (tesseract.engine_pool)
    # At most ocr_concurrency tesseract processes per service process, whatever number of
    # messages the channel lets in at once (prefetch is the intended bound, this the guarantee).
    slots: asyncio.Semaphore


async def ocr_page(
    ctx: ServiceContext, runtime: OcrRuntime, event: ImagesExtracted, lang: str
) -> PageOcr:
    """OCR each of the page's images that is worth it, one after another."""
    settings = ctx.settings
    page = PageOcr()
    for number, image in enumerate(event.images, start=1):
        if too_small(image, settings):
            page.skipped += 1
            continue
        # Fetched before a slot is taken: a download never holds up a tesseract slot.
        async with image_file(ctx.blobs, image, number, event.page) as path, runtime.slots:
            result = await ocr_image(
                path, lang=lang, settings=settings, job_id=event.job_id, engine=runtime.engine
            )
        page.seconds += result.seconds
        if result.cancelled:
            raise JobGone("cancelled while OCR was running")
        if result.failure is not None:
            # The job may have ended meanwhile; then there is nobody to report to.
            await require_active(ctx.pool, event.job_id)
            page.errors.append(f"OCR of image {number} failed: {result.failure}")
            log.warning(
                "image OCR failed",
                page=event.page,
                image=number,
                why=result.failure,
                outcome=result.outcome,
                detail=result.detail,
            )
        else:
            page.ocred += 1
            metrics.IMAGES_OCRED.inc()
            if result.rotated:
                metrics.IMAGES_ROTATED.inc()
        page.add_reading(result)
    return page


def make_handler(ctx: ServiceContext, engine: WarmPool) -> Handler:
    """`engine`: the children that run tesseract (tesseract.engine_pool)."""
    runtime = OcrRuntime(engine, asyncio.Semaphore(max(1, ctx.settings.ocr_concurrency)))

    async def handle(event: ImagesExtracted, delivery: Delivery) -> None:
        await require_active(ctx.pool, event.job_id)
        lang = page_lang(event, ctx.settings)
        page = await ocr_page(ctx, runtime, event, lang)
        metrics.OCR_PAGE_SECONDS.observe(page.seconds)
        await ctx.bus.publish(page.event(event, ctx.settings), priority=delivery.priority)

    return handle
