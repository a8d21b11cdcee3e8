"""The ingest service: accepts uploads over HTTP and relays their events to the bus."""

from __future__ import annotations

from fastapi import FastAPI

from services.ingest.api.main import api_router
from services.ingest.middleware import RequestIdMiddleware
from services.ingest.outbox import run_relay
from shared.service import ServiceContext, create_service_app, run_service
from shared.settings import Settings, get_settings


def setup(ctx: ServiceContext) -> None:
    ctx.spawn(run_relay(ctx.pool, ctx.bus), name="outbox-relay")


def create_app(settings: Settings | None = None) -> FastAPI:
    app = create_service_app("ingest", setup, settings=settings, title="docpipe ingest")
    app.include_router(api_router)
    app.add_middleware(RequestIdMiddleware)
    return app


def main() -> None:
    settings = get_settings()
    run_service(create_app(settings), settings.ingest_port, settings)
