"""The progress service: consumes every event, keeps each job's progress and result, and
serves live progress over WebSocket (see api.py)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime

import structlog
from fastapi import FastAPI

from services.progress import api, batch_api, cost_api, dead_letters, learning, tickets, webhooks
from services.progress import metrics as progress_metrics
from services.progress.admin import api as admin_api
from services.progress.admin import audit as admin_audit
from services.progress.admin import batches as admin_batches
from services.progress.admin import page as admin_page
from services.progress.batcher import WindowBatcher
from services.progress.broker_stats import broker_stats_loop
from services.progress.dead_letter_recorder import subscribe_dead_letter_queues
from services.progress.deduplicated import settle_followers
from services.progress.deps import ProgressRuntime
from services.progress.hub import Hub
from services.progress.lifecycle import sweep_stalls
from services.progress.models import Outcome
from services.progress.replica_feed import ReplicaFeed
from services.progress.retention import retention_loop
from services.progress.webhooks import routes as webhook_routes
from shared import topology
from shared.auth import requiring_keys
from shared.bus import Bus, Delivery
from shared.events import ALL_EVENTS, Event, JobCompleted
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings

log = structlog.get_logger(__name__)

Handler = Callable[[Event, Delivery], Awaitable[None]]


def push(runtime: ProgressRuntime, outcome: Outcome, occurred_at: datetime | None = None) -> None:
    """After commit: push the updates to local WebSocket clients, and through the replica
    feed (when there is one) to the other progress replicas' clients (never waits).
    `occurred_at`: when the event behind the updates occurred (for the push-lag metric)."""
    for update in outcome.updates:
        runtime.hub.publish(uuid.UUID(update["job_id"]), update, occurred_at)
        if update["final"]:
            log.info(
                "job finished", job_id=update["job_id"], status=update["status"], seq=update["seq"]
            )
    for message in outcome.batch_messages:
        runtime.batch_hub.publish(message)
    progress_metrics.observe_first_progress(outcome.first_progress_seconds)


async def follow_up(ctx: ServiceContext, outcome: Outcome) -> None:
    """After the push: job-duration metrics, and the follow-up events (job.completed), their
    publishes confirmed together."""
    await progress_metrics.observe_finished(ctx.pool, outcome.updates)
    await asyncio.gather(*(ctx.bus.publish(event) for event in outcome.publish))
    await learning.learn_completed(ctx.pool, outcome, ctx.settings.job_deadline_seconds)


def own_announcement(event: Event) -> bool:
    """job.completed is published by this service after it committed the completion (and
    pushed the final update), so reading it back changes nothing: it is acked unread."""
    return isinstance(event, JobCompleted)


def make_handler(ctx: ServiceContext, runtime: ProgressRuntime) -> Handler:
    """Every event goes through the window batcher (a window of 0 ms flushes at once)."""
    batcher = WindowBatcher(
        ctx.pool,
        functools.partial(push, runtime),
        functools.partial(follow_up, ctx),
        window=max(0.0, ctx.settings.progress_batch_window_ms) / 1000,
        max_batch=ctx.settings.progress_batch_max,
        retries=len(ctx.settings.retry_delays_ms),
    )
    runtime.batcher = batcher

    async def submit(event: Event, delivery: Delivery) -> None:
        if not own_announcement(event):
            await batcher.submit(event, delivery)

    return submit


async def stall_loop(ctx: ServiceContext, runtime: ProgressRuntime) -> None:
    while True:
        try:
            outcome = await sweep_stalls(
                ctx.pool,
                stall_seconds=ctx.settings.stall_seconds,
                deadline_seconds=ctx.settings.job_deadline_seconds,
                on_ended=settle_followers,
            )
            push(runtime, outcome)
            await follow_up(ctx, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping; the next round retries
            log.exception("stall sweep failed")
        await asyncio.sleep(ctx.settings.stall_check_seconds)


def setup(ctx: ServiceContext, runtime: ProgressRuntime | None = None) -> None:
    """Subscribe the window handler and start the sweeps; `runtime` is what the HTTP routes
    share with them (create_app passes its own; alone, e.g. for the AsyncAPI, a fresh one)."""
    runtime = runtime or ProgressRuntime(hub=Hub())
    # Batching needs many messages in flight at once to have something to group: room for
    # the window being applied and the next one filling.
    prefetch = max(ctx.settings.progress_prefetch, 2 * ctx.settings.progress_batch_max)
    ctx.bus.subscribe(
        topology.PROGRESS,
        ALL_EVENTS,
        make_handler(ctx, runtime),
        prefetch=prefetch,
        coalesce_acks=True,
        publishes=(JobCompleted,),
    )
    subscribe_dead_letter_queues(ctx)
    ctx.spawn(stall_loop(ctx, runtime), "stall-loop")
    ctx.spawn(retention_loop(ctx), "retention")
    ctx.spawn(progress_metrics.job_stats_loop(ctx.pool), "job-stats")
    ctx.spawn(broker_stats_loop(ctx.settings.amqp_url, ctx.bus.topology), "broker-stats")
    ctx.spawn(webhooks.run(ctx.pool, ctx.settings), "webhooks")
    ctx.spawn(learning.reload_loop(ctx.pool, ctx.settings.stage_costs_reload_seconds), "costs")
    if isinstance(ctx.bus, Bus):  # on RabbitMQ: live progress from every replica
        feed = ReplicaFeed(ctx.settings.amqp_url, ctx.bus.topology, runtime.hub, runtime.batch_hub)
        ctx.spawn(feed.run(), "replica-feed")


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = ProgressRuntime(hub=Hub())
    app = create_service_app(
        "progress",
        requiring_keys(functools.partial(setup, runtime=runtime)),
        settings=settings,
        title="docpipe progress",
    )
    app.state.runtime = runtime
    app.include_router(api.router)
    app.include_router(cost_api.router)
    app.include_router(dead_letters.router)
    app.include_router(admin_api.router)
    app.include_router(webhook_routes.router)
    app.include_router(batch_api.router)
    app.include_router(admin_batches.router)
    app.include_router(admin_audit.router)
    app.include_router(tickets.router)
    admin_page.mount(app)
    return app
