"""page.extracted / pages.extracted / page.ocred (with their chunks) -> one chunks.analyzed
per page event; document.summarize -> document.summarized."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from services.analyzer import metrics
from services.analyzer.interface import ChunkAnalyzer
from shared.bus import Delivery, Handler
from shared.events import (
    AnalyzedChunk,
    ChunksAnalyzed,
    DocumentSummarize,
    PageExtracted,
    PageOcred,
    PagesExtracted,
    PageSource,
)
from shared.jobs import require_active
from shared.service import ServiceContext

if TYPE_CHECKING:
    from services.analyzer.runtime import AnalyzerRuntime

PageEvent = PageExtracted | PagesExtracted | PageOcred


async def analyze_chunks(analyzer: ChunkAnalyzer, event: PageEvent) -> list[AnalyzedChunk]:
    """Every chunk of the page event, analysed, in chunk order.

    A remote backend waits on the network, so its calls for one page overlap; the built-in
    backend returns without awaiting anything, so gather costs it nothing extra.
    """
    chunks = event.chunks
    analyses = await asyncio.gather(*(analyzer.analyze(c.text) for c in chunks))
    return [AnalyzedChunk(chunk=c, analysis=a) for c, a in zip(chunks, analyses, strict=True)]


PageAnalysis = Callable[[PageEvent], Awaitable[tuple[list[AnalyzedChunk], str]]]


def builtin_only(analyzer: ChunkAnalyzer) -> PageAnalysis:
    """The page analysis of a process without the LLM stage (tests of the built-in path)."""

    async def analyze(event: PageEvent) -> tuple[list[AnalyzedChunk], str]:
        return await analyze_chunks(analyzer, event), analyzer.name

    return analyze


def make_handler(ctx: ServiceContext, analyze: PageAnalysis | ChunkAnalyzer) -> Handler:
    """`analyze`: the runtime's analyze_page (the job's backend), or a bare backend."""
    analyze_page = builtin_only(analyze) if isinstance(analyze, ChunkAnalyzer) else analyze

    async def handle(event: PageEvent, delivery: Delivery) -> None:
        if not event.chunks:
            return  # nothing to analyse: progress counts no analysis for this page
        await require_active(ctx.pool, event.job_id)
        # Built-in analysis of a page's bounded chunks takes milliseconds: inline, not in a
        # subprocess. LLM calls wait on the network (the engine bounds them per process).
        items, backend = await analyze_page(event)
        source = PageSource.OCR if isinstance(event, PageOcred) else PageSource.TEXT_LAYER
        first_page = min(i.chunk.page for i in items)
        await ctx.bus.publish(
            ChunksAnalyzed(job_id=event.job_id, page=first_page, source=source, items=items),
            priority=delivery.priority,
        )
        metrics.CHUNKS_ANALYZED.labels(analyzer=backend).inc(len(items))

    return handle


def make_summarize_handler(ctx: ServiceContext, runtime: AnalyzerRuntime) -> Handler:
    """The document's summary from its chunk summaries; a redelivery reuses every step (the
    engine's results are written once) and publishes the same answer again."""

    async def handle(event: DocumentSummarize, delivery: Delivery) -> None:
        await require_active(ctx.pool, event.job_id)
        summarized = await runtime.llm.summarize(event)
        await ctx.bus.publish(summarized, priority=delivery.priority)

    return handle
