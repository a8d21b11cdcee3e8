"""page.extracted / pages.extracted / page.ocred (with their chunks) -> one chunks.analyzed
per page event."""

from __future__ import annotations

import asyncio

from services.analyzer import metrics
from services.analyzer.interface import ChunkAnalyzer
from shared.bus import Delivery, Handler
from shared.events import (
    AnalyzedChunk,
    ChunksAnalyzed,
    PageExtracted,
    PageOcred,
    PagesExtracted,
    PageSource,
)
from shared.jobs import require_active
from shared.service import ServiceContext

PageEvent = PageExtracted | PagesExtracted | PageOcred


async def analyze_chunks(analyzer: ChunkAnalyzer, event: PageEvent) -> list[AnalyzedChunk]:
    """Every chunk of the page event, analysed, in chunk order.

    A remote backend (an LLM) waits on the network, so its calls for one page overlap; the
    built-in backend returns without awaiting anything, so gather costs it nothing extra.
    """
    chunks = event.chunks
    analyses = await asyncio.gather(*(analyzer.analyze(c.text) for c in chunks))
    return [AnalyzedChunk(chunk=c, analysis=a) for c, a in zip(chunks, analyses, strict=True)]


def make_handler(ctx: ServiceContext, analyzer: ChunkAnalyzer) -> Handler:
    async def handle(event: PageEvent, delivery: Delivery) -> None:
        if not event.chunks:
            return  # nothing to analyse: progress counts no analysis for this page
        await require_active(ctx.pool, event.job_id)
        # Built-in analysis of a page's bounded chunks takes milliseconds: inline, not in a
        # subprocess.
        items = await analyze_chunks(analyzer, event)
        source = PageSource.OCR if isinstance(event, PageOcred) else PageSource.TEXT_LAYER
        first_page = min(i.chunk.page for i in items)
        await ctx.bus.publish(
            ChunksAnalyzed(job_id=event.job_id, page=first_page, source=source, items=items),
            priority=delivery.priority,
        )
        metrics.CHUNKS_ANALYZED.labels(analyzer=analyzer.name).inc(len(items))

    return handle
