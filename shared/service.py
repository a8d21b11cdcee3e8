"""The runtime every service shares: logging, the database pool, the bus, and an HTTP app with
/healthz, /readyz and /metrics. A service adds its handlers and routes; this wires the rest."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog
import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shared.api_docs import document_refusals
from shared.blobstore import Blobs, open_blob_store
from shared.bus import Bus, Delivery
from shared.db import create_pool
from shared.events import JobCancelled
from shared.jobs import forget_job
from shared.logging import configure_logging
from shared.metrics import count_outcome, init_consumer_metrics, observe_handler
from shared.sandbox import kill_job
from shared.settings import Settings, get_settings

log = structlog.get_logger(__name__)


@dataclass
class ServiceContext:
    """What a service's setup gets: its settings and the shared runtime objects. A service
    keeps its own runtime objects in a typed object of its own, not here."""

    name: str
    settings: Settings
    bus: Bus
    pool: asyncpg.Pool
    blobs: Blobs
    # Deprecated: being replaced by each service's own typed runtime object (issue 9).
    background: list[asyncio.Task[Any]] = field(default_factory=list)
    # A service's own /readyz checks beside the database and the broker: name -> "ready?".
    ready_checks: dict[str, Callable[[], Awaitable[bool]]] = field(default_factory=dict)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Run a background loop for the life of the service."""
        self.background.append(asyncio.create_task(coro, name=name))


async def _kill_cancelled_job(event: JobCancelled, _delivery: Delivery) -> None:
    # Queued work of the job is dropped from now on, not after require_active's cache expires.
    forget_job(event.job_id)
    killed = kill_job(event.job_id)
    if killed:
        log.info(
            "killed running work of a cancelled job", job_id=str(event.job_id), processes=killed
        )


async def database_unreachable(pool: asyncpg.Pool) -> bool:
    """Whether the database is away right now (e.g. restarting): a probe for the bus."""
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
    except Exception:  # any failure to answer SELECT 1 means unreachable
        return True
    return False


Setup = Callable[[ServiceContext], Awaitable[None] | None]


def subscribe_runtime(ctx: ServiceContext) -> None:
    """What every service process subscribes besides its own handlers."""
    # Cancel must stop running work wherever it is: kill this process's children for the job.
    ctx.bus.subscribe_broadcast(JobCancelled, _kill_cancelled_job)


def create_service_app(
    name: str,
    setup: Setup,
    *,
    settings: Settings | None = None,
    title: str | None = None,
    pool_size: int = 10,
) -> FastAPI:
    """Build the service's FastAPI app; `setup` subscribes handlers and adds routes/loops."""
    settings = settings or get_settings()
    configure_logging(name, settings.log_level, settings.log_json)
    app = FastAPI(
        title=title or f"docpipe {name}", lifespan=_lifespan(name, setup, settings, pool_size)
    )
    app.state.settings = settings
    _add_ops_routes(app, name)
    document_refusals(app)
    return app


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(name: str, setup: Setup, settings: Settings, pool_size: int) -> Lifespan:
    """Start-up and shut-down: the pool, the bus, the service's setup, its background loops."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(
            settings.database_url,
            migrate_url=settings.migrate_database_url,
            max_size=pool_size,
            bus_prefix=settings.bus_prefix,
        )
        bus = Bus(settings, name)
        bus.on_outcome.append(count_outcome)
        bus.on_handled.append(observe_handler)
        bus.dependency_down = lambda: database_unreachable(pool)
        ctx = ServiceContext(name, settings, bus, pool, open_blob_store(settings))
        app.state.ctx = ctx
        result = setup(ctx)
        if asyncio.iscoroutine(result):
            await result
        subscribe_runtime(ctx)
        init_consumer_metrics(group.name for group in bus.subscribed)
        await bus.start()
        # Everything loaded so far (libraries, models, the app) lives as long as the process:
        # freeze it out of the collector, so a full collection scans only what messages
        # allocate (a full collection over the start-up heap paused the loop for ~0.1-0.2 s).
        gc.collect()
        gc.freeze()
        log.info("service started")
        try:
            yield
        finally:
            log.info("service stopping")
            for task in ctx.background:
                task.cancel()
            await asyncio.gather(*ctx.background, return_exceptions=True)
            await bus.stop()
            await pool.close()

    return lifespan


def _add_ops_routes(app: FastAPI, name: str) -> None:
    """/healthz (the process answers), /readyz (database and broker reachable), /metrics."""

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": name}

    @app.get("/readyz", tags=["ops"])
    async def readyz(response: Response) -> dict[str, Any]:
        ctx: ServiceContext = app.state.ctx
        checks: dict[str, bool] = {}
        try:
            async with ctx.pool.acquire(timeout=2) as conn:
                checks["database"] = await conn.fetchval("SELECT 1") == 1
        except Exception:
            checks["database"] = False
        try:
            checks["broker"] = await ctx.bus.ping()
        except Exception:
            checks["broker"] = False
        for check_name, check in ctx.ready_checks.items():
            try:
                checks[check_name] = await check()
            except Exception:
                checks[check_name] = False
        ok = all(checks.values())
        response.status_code = 200 if ok else 503
        return {"ready": ok, "checks": checks}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def run_service(app: FastAPI, port: int, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    uvicorn.run(
        app,
        host=settings.host,
        port=port,
        log_config=None,
        access_log=False,
        ws_ping_interval=20,
        # Progress messages are small JSON; per-message deflate cost more CPU than it saved.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=20,
    )
