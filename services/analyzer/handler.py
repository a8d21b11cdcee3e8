"""chunk.created -> chunk.analyzed."""

from __future__ import annotations

from services.analyzer import metrics
from services.analyzer.interface import ChunkAnalyzer, get_analyzer
from shared import topology
from shared.bus import Delivery, Handler
from shared.events import ChunkAnalyzed, ChunkCreated, Event
from shared.jobs import require_active
from shared.service import ServiceContext


def make_handler(ctx: ServiceContext, analyzer: ChunkAnalyzer) -> Handler:
    async def handle(event: Event, delivery: Delivery) -> None:
        assert isinstance(event, ChunkCreated)
        await require_active(ctx.pool, event.job_id)
        # Built-in analysis of one bounded chunk (<= chunk_max_chars) takes well under a
        # millisecond to a few milliseconds, so it runs inline rather than in a subprocess.
        analysis = await analyzer.analyze(event.chunk.text)
        await ctx.bus.publish(
            ChunkAnalyzed(job_id=event.job_id, chunk=event.chunk, analysis=analysis),
            priority=delivery.priority,
        )
        metrics.CHUNKS_ANALYZED.labels(analyzer=analyzer.name).inc()

    return handle


def setup(ctx: ServiceContext) -> None:
    analyzer = get_analyzer()
    ctx.state["analyzer"] = analyzer
    # One message per chunk: consumed with aio-pika directly, whose per-message cost is a
    # fraction of FastStream's (same failure handling, see Bus.subscribe).
    ctx.bus.subscribe(
        topology.ANALYZER,
        make_handler(ctx, analyzer),
        prefetch=ctx.settings.analyzer_prefetch,
        direct=True,
    )
