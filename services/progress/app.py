"""The progress service: consumes every event, keeps each job's progress and result, and
serves live progress over WebSocket (see api.py)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import structlog
from fastapi import FastAPI

from services.progress import api
from services.progress.aggregate import Outcome, apply_event, sweep_stalls
from services.progress.hub import Hub
from shared import topology
from shared.bus import Delivery
from shared.events import Event
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

log = structlog.get_logger(__name__)

# How often the stall/deadline sweep runs.
STALL_CHECK_SECONDS = 5.0


async def deliver(ctx: ServiceContext, outcome: Outcome) -> None:
    """After commit: push updates to local WebSocket clients, then publish follow-up events."""
    hub: Hub = ctx.state["hub"]
    for update in outcome.updates:
        hub.publish(uuid.UUID(update["job_id"]), update)
    for event in outcome.publish:
        await ctx.bus.publish(event)


def make_handler(ctx: ServiceContext) -> Any:
    retries = len(ctx.settings.retry_delays_ms)

    async def handle(event: Event, delivery: Delivery) -> None:
        outcome = await apply_event(
            ctx.pool,
            event,
            last_attempt=delivery.attempt >= retries,
            redelivered=delivery.redelivered or delivery.attempt > 0,
        )
        await deliver(ctx, outcome)

    return handle


async def stall_loop(ctx: ServiceContext, interval: float = STALL_CHECK_SECONDS) -> None:
    while True:
        try:
            outcome = await sweep_stalls(
                ctx.pool,
                stall_seconds=ctx.settings.stall_seconds,
                deadline_seconds=ctx.settings.job_deadline_seconds,
            )
            await deliver(ctx, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping; the next round retries
            log.exception("stall sweep failed")
        await asyncio.sleep(interval)


def setup(ctx: ServiceContext) -> None:
    ctx.state["hub"] = Hub()
    ctx.bus.subscribe(topology.PROGRESS, make_handler(ctx), prefetch=ctx.settings.progress_prefetch)
    ctx.spawn(stall_loop(ctx), "stall-loop")


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("progress", setup, settings=settings, title="docpipe progress")
    app.include_router(api.router)
    return app
