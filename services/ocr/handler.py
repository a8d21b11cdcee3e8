"""images.extracted -> page.ocred, carrying the OCR text and its chunks.

One message is one page. A failure on one image is a page-level failure: the page reports the
error and whatever text the other images gave, and the job carries on. A missing blob can never
succeed, so it fails the job.
"""

from __future__ import annotations

import asyncio

import structlog

from services.ocr import metrics
from services.ocr.tesseract import engine_pool, join_page_text, ocr_image, valid_lang
from shared import topology
from shared.blobstore import BlobNotFound
from shared.bus import Delivery, Handler
from shared.chunking import make_chunks
from shared.errors import JobGone, PermanentError
from shared.events import (
    ImageRef,
    ImagesExtracted,
    PageOcred,
    PageSource,
)
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


def make_handler(ctx: ServiceContext, engine: WarmPool) -> Handler:
    """`engine`: the children that run tesseract (tesseract.engine_pool)."""
    settings = ctx.settings
    # At most ocr_concurrency tesseract processes per service process, whatever number of
    # messages the channel lets in at once (prefetch is the intended bound, this the guarantee).
    tesseract_slots = asyncio.Semaphore(max(1, settings.ocr_concurrency))

    async def handle(event: ImagesExtracted, delivery: Delivery) -> None:
        await require_active(ctx.pool, event.job_id)
        lang = event.lang or settings.ocr_lang
        if not valid_lang(lang):
            raise PermanentError(f"'{lang}' is not a valid OCR language code.")

        texts: list[str] = []
        errors: list[str] = []
        ocred = skipped = 0
        seconds = 0.0
        for number, image in enumerate(event.images, start=1):
            if too_small(image, settings):
                skipped += 1
                continue
            try:
                path = ctx.blobs.local_path(image.uri)
            except (BlobNotFound, ValueError) as exc:
                raise PermanentError(
                    f"Image {number} of page {event.page} is missing from storage, "
                    "so the page cannot be OCRed."
                ) from exc
            async with tesseract_slots:
                result = await ocr_image(
                    path, lang=lang, settings=settings, job_id=event.job_id, engine=engine
                )
            seconds += result.seconds
            if result.cancelled:
                raise JobGone("cancelled while OCR was running")
            if result.failure is not None:
                # The job may have ended meanwhile; then there is nobody to report to.
                await require_active(ctx.pool, event.job_id)
                errors.append(f"OCR of image {number} failed: {result.failure}")
                log.warning(
                    "image OCR failed",
                    page=event.page,
                    image=number,
                    why=result.failure,
                    detail=result.detail,
                )
            else:
                ocred += 1
                metrics.IMAGES_OCRED.inc()
            if result.text:
                texts.append(result.text)

        text = join_page_text(texts)
        chunks = make_chunks(
            event.job_id, event.page, PageSource.OCR, text, settings.chunk_max_chars
        )
        error = None
        if errors:
            error = f"Page {event.page}: " + " ".join(errors)
        metrics.OCR_PAGE_SECONDS.observe(seconds)
        await ctx.bus.publish(
            PageOcred(
                job_id=event.job_id,
                page=event.page,
                text=text,
                chunks=chunks,
                images_ocred=ocred,
                images_skipped=skipped,
                ocr_seconds=round(seconds, 3),
                error=error,
            ),
            priority=delivery.priority,
        )

    return handle


def setup(ctx: ServiceContext) -> None:
    # One message more than there are tesseract slots: when a slot frees, its next image is
    # already here instead of a confirm-ack-deliver round trip away (the semaphore in
    # make_handler keeps the number of tesseracts at ocr_concurrency).
    engine = engine_pool(ctx.settings)
    ctx.spawn(engine.keep_warm(), "ocr-engine-children")
    ctx.bus.subscribe(
        topology.OCR,
        ImagesExtracted,
        make_handler(ctx, engine),
        prefetch=ctx.settings.ocr_concurrency + 1,
        publishes=(PageOcred,),
    )
