"""The analyzer service: its app and the setup that subscribes its handlers."""

from __future__ import annotations

from fastapi import FastAPI

from services.analyzer.handler import make_handler, make_summarize_handler
from services.analyzer.runtime import build_runtime
from shared import topology
from shared.events import (
    ChunksAnalyzed,
    DocumentSummarize,
    DocumentSummarized,
    PageExtracted,
    PageOcred,
    PagesExtracted,
)
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings


def setup(ctx: ServiceContext) -> None:
    runtime = build_runtime(ctx)
    ctx.bus.subscribe(
        topology.ANALYZER,
        (PageExtracted, PagesExtracted, PageOcred),
        make_handler(ctx, runtime.analyze_page),
        prefetch=ctx.settings.analyzer_prefetch,
        publishes=(ChunksAnalyzed,),
    )
    ctx.bus.subscribe(
        topology.ANALYZER,
        DocumentSummarize,
        make_summarize_handler(ctx, runtime),
        prefetch=ctx.settings.analyzer_prefetch,
        publishes=(DocumentSummarized,),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("analyzer", setup, settings=settings)
