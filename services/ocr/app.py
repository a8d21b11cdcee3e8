"""The OCR service: its app and the setup that subscribes its handler."""

from __future__ import annotations

from fastapi import FastAPI

from services.ocr.handler import make_handler
from services.ocr.tesseract import engine_pool
from shared import topology
from shared.events import ImagesExtracted, PageOcred
from shared.sandbox.startup import require_sandbox_user
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings


async def setup(ctx: ServiceContext) -> None:
    # Asked to run its children as a user of their own, and unable to: refuse to start.
    await require_sandbox_user(ctx.settings.sandbox_user, ctx.settings.sandbox_handoff_dir)
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


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("ocr", setup, settings=settings)
