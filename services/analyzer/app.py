"""The analyzer service: its app and the setup that subscribes its handler."""

from __future__ import annotations

from fastapi import FastAPI

from services.analyzer.handler import make_handler
from services.analyzer.interface import get_analyzer
from shared import topology
from shared.events import ChunksAnalyzed, PageExtracted, PageOcred, PagesExtracted
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings


def setup(ctx: ServiceContext) -> None:
    # The backend (DOCPIPE_ANALYZER) is chosen once; the handler holds it for the service's life.
    analyzer = get_analyzer()
    ctx.bus.subscribe(
        topology.ANALYZER,
        (PageExtracted, PagesExtracted, PageOcred),
        make_handler(ctx, analyzer),
        prefetch=ctx.settings.analyzer_prefetch,
        publishes=(ChunksAnalyzed,),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("analyzer", setup, settings=settings)
