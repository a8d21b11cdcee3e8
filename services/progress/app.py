"""The progress service: consumes every event, keeps each job's progress and result, and
serves live progress over WebSocket (see api.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import structlog
from fastapi import FastAPI

from services.progress import api, dead_letters
from services.progress import metrics as progress_metrics
from services.progress.admin import api as admin_api
from services.progress.admin import page as admin_page
from services.progress.aggregate import Outcome, apply_event, sweep_stalls
from services.progress.batching import WindowBatcher
from services.progress.broker_stats import broker_stats_loop
from services.progress.dead_letter_recorder import subscribe_dead_letter_queues
from services.progress.hub import Hub
from shared import topology
from shared.bus import Delivery
from shared.events import ALL_EVENTS, Event, JobCompleted
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

log = structlog.get_logger(__name__)

# How often the stall/deadline sweep runs (DOCPIPE_STALL_CHECK_SECONDS overrides it).
STALL_CHECK_SECONDS = 5.0


def push(ctx: ServiceContext, outcome: Outcome, occurred_at: datetime | None = None) -> None:
    """After commit: push the updates to local WebSocket clients (never waits).
    `occurred_at`: when the event behind the updates occurred (for the push-lag metric)."""
    hub: Hub = ctx.state["hub"]
    for update in outcome.updates:
        hub.publish(uuid.UUID(update["job_id"]), update, occurred_at)
        if update.get("final"):
            log.info(
                "job finished", job_id=update["job_id"], status=update["status"], seq=update["seq"]
            )
    progress_metrics.observe_first_progress(outcome.first_progress_seconds)


async def follow_up(ctx: ServiceContext, outcome: Outcome) -> None:
    """After the push: job-duration metrics, and the follow-up events (job.completed), their
    publishes confirmed together."""
    await progress_metrics.observe_finished(ctx.pool, outcome.updates)
    await asyncio.gather(*(ctx.bus.publish(event) for event in outcome.publish))


async def deliver(
    ctx: ServiceContext, outcome: Outcome, occurred_at: datetime | None = None
) -> None:
    push(ctx, outcome, occurred_at)
    await follow_up(ctx, outcome)


def own_announcement(event: Event) -> bool:
    """job.completed is published by this service after it committed the completion (and
    pushed the final update), so reading it back changes nothing: it is acked unread rather
    than costing a transaction per finished job (a burst of completions delayed the other
    jobs' updates)."""
    return isinstance(event, JobCompleted)


def make_handler(ctx: ServiceContext) -> Any:
    retries = len(ctx.settings.retry_delays_ms)
    if ctx.settings.progress_batch_window_ms > 0:
        # One set-based transaction for the events of every job arriving within a few ms,
        # and one coalesced update per job per window (batching.py).
        batcher = WindowBatcher(
            ctx.pool,
            lambda outcome, at: push(ctx, outcome, at),
            lambda outcome: follow_up(ctx, outcome),
            window=ctx.settings.progress_batch_window_ms / 1000,
            max_batch=ctx.settings.progress_batch_max,
            retries=retries,
        )
        ctx.state["batcher"] = batcher

        async def submit(event: Event, delivery: Delivery) -> None:
            if not own_announcement(event):
                await batcher.submit(event, delivery)

        return submit

    async def handle(event: Event, delivery: Delivery) -> None:
        if own_announcement(event):
            return
        outcome = await apply_event(
            ctx.pool,
            event,
            last_attempt=delivery.attempt >= retries,
            redelivered=delivery.redelivered or delivery.attempt > 0,
        )
        await deliver(ctx, outcome, event.occurred_at)

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
    # Batching needs many messages in flight at once to have something to group: room for
    # the window being applied and the next one filling.
    prefetch = max(ctx.settings.progress_prefetch, 2 * ctx.settings.progress_batch_max)
    ctx.bus.subscribe(
        topology.PROGRESS,
        ALL_EVENTS,
        make_handler(ctx),
        prefetch=prefetch,
        coalesce_acks=True,
        publishes=(JobCompleted,),
    )
    subscribe_dead_letter_queues(ctx)
    ctx.spawn(stall_loop(ctx, ctx.settings.stall_check_seconds), "stall-loop")
    ctx.spawn(progress_metrics.job_stats_loop(ctx.pool), "job-stats")
    ctx.spawn(broker_stats_loop(ctx.settings.amqp_url, ctx.bus.topology), "broker-stats")


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("progress", setup, settings=settings, title="docpipe progress")
    app.include_router(api.router)
    app.include_router(dead_letters.router)
    app.include_router(admin_api.router)
    admin_page.mount(app)
    return app
