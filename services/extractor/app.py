"""The extractor service: its app and the setup that subscribes its handler."""

from __future__ import annotations

from fastapi import FastAPI

from services.extractor.scheduler import Scheduler
from services.extractor.service import WARM_CHILD_ARGV, ExtractorRuntime, make_handler
from shared import topology
from shared.events import (
    DocumentUploaded,
    ExtractionAccepted,
    ExtractionStarted,
    ImagesExtracted,
    PageExtracted,
    PagesExtracted,
)
from shared.jobs import refusal_recorder
from shared.sandbox import ChildLimits, WarmPool
from shared.sandbox.startup import require_sandbox_user
from shared.secret_box import requiring_secret_keys
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings


def build_runtime(settings: Settings) -> ExtractorRuntime:
    """The scheduler and the warm children the handler uses for the life of the service."""
    # At most extractor_concurrency documents are extracted at once; the prefetch lets a few
    # more wait in the local scheduler, which picks small and high-priority ones first.
    scheduler = Scheduler(
        settings.extractor_concurrency, aging_seconds=settings.extractor_aging_seconds
    )
    warm = None
    if settings.extract_warm_children > 0:
        warm = WarmPool(
            WARM_CHILD_ARGV,
            size=settings.extract_warm_children,
            cpu_seconds=settings.extract_cpu_seconds,
            memory_mb=settings.extract_memory_mb,
            # As many children as ran at most before (the slots, one split PDF's second
            # child): an idle warm child never adds to the service's peak memory.
            max_children=settings.extractor_concurrency + 1,
            child_limits=ChildLimits.from_settings(settings),
        )
    return ExtractorRuntime(scheduler=scheduler, warm_children=warm)


def extractor_prefetch(settings: Settings) -> int:
    """The documents one extractor holds: those it runs and a few spare ones, so a slot that
    frees starts the next at once (no round trip to the broker) and the scheduler still has a
    choice, while the rest stay on the queue for any replica to take."""
    return settings.extractor_concurrency + settings.extractor_prefetch_spare


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    # Asked to run its children as a user of their own, and unable to: refuse to start.
    await require_sandbox_user(settings.sandbox_user, settings.sandbox_handoff_dir)
    runtime = build_runtime(settings)
    if runtime.warm_children is not None:
        ctx.spawn(runtime.warm_children.keep_warm(), "extractor-warm-children")
    # An upload whose AMQP publisher may not name its tenant is recorded here, once (progress,
    # which sees it too, drops it without a record).
    ctx.bus.on_refused = refusal_recorder(ctx.pool)
    ctx.bus.subscribe(
        topology.EXTRACTOR,
        DocumentUploaded,
        make_handler(ctx, runtime),
        prefetch=extractor_prefetch(settings),
        publishes=(
            ExtractionAccepted,
            ExtractionStarted,
            PageExtracted,
            PagesExtracted,
            ImagesExtracted,
        ),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app("extractor", requiring_secret_keys(setup), settings=settings)
