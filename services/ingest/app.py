"""The ingest service: accepts uploads over HTTP and relays their events to the bus."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.constants import REF_TEMPLATE

from services.ingest.api.errors import install_error_handlers
from services.ingest.api.routes import jobs
from services.ingest.limits import UploadSlots
from services.ingest.middleware import RequestIdMiddleware
from services.ingest.models import UploadForm
from services.ingest.outbox import run_relay
from shared.auth import requiring_keys
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings, get_settings


def setup(ctx: ServiceContext) -> None:
    ctx.spawn(run_relay(ctx.pool, ctx.bus), name="outbox-relay")


def upload_form_schemas() -> dict[str, Any]:
    """UploadForm and the schemas it refers to, for the OpenAPI components."""
    form = UploadForm.model_json_schema(ref_template=REF_TEMPLATE)
    return {**form.pop("$defs", {}), UploadForm.__name__: form}


def _with_upload_form(app: FastAPI) -> None:
    """FastAPI documents the bodies it parses; the upload is streamed by hand, so its form's
    schema is added to the components here, generated from its model."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                upload_form_schemas()
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        "ingest", requiring_keys(setup), settings=settings, title="docpipe ingest"
    )
    app.state.upload_slots = UploadSlots(settings.max_concurrent_uploads_per_tenant)
    app.include_router(jobs.router)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    _with_upload_form(app)
    return app
