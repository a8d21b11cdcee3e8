"""The ingest service: accepts uploads over HTTP and relays their events to the bus."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.constants import REF_TEMPLATE

from services.ingest.admission import run_admission
from services.ingest.api.errors import install_error_handlers
from services.ingest.api.routes import batches, deletion, jobs
from services.ingest.batch_models import BatchRequest, BatchUploadForm
from services.ingest.fair_share import TenantLimits
from services.ingest.limits import UploadSlots
from services.ingest.middleware import RequestIdMiddleware
from services.ingest.models import UploadForm, UrlJobRequest
from services.ingest.ocr_lang import log_installed
from services.ingest.outbox import run_relay
from shared.auth import requiring_keys
from shared.secret_box import requiring_secret_keys
from shared.service import ServiceContext, create_service_app
from shared.settings import Settings, get_settings


def setup(ctx: ServiceContext) -> None:
    log_installed(ctx.settings)
    ctx.spawn(run_relay(ctx.pool, ctx.bus), name="outbox-relay")
    limits = TenantLimits.from_settings(ctx.settings)
    poll = ctx.settings.admission_poll_seconds
    ctx.spawn(run_admission(ctx.pool, ctx.bus, limits, poll_seconds=poll), name="admission")


def upload_form_schemas() -> dict[str, Any]:
    """The hand-read bodies' models (UploadForm, UrlJobRequest, the batch bodies) and the
    schemas they refer to, for the OpenAPI components."""
    schemas: dict[str, Any] = {}
    for model in (UploadForm, UrlJobRequest, BatchRequest, BatchUploadForm):
        schema = model.model_json_schema(ref_template=REF_TEMPLATE)
        schemas.update({**schema.pop("$defs", {}), model.__name__: schema})
    return schemas


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
        "ingest",
        requiring_keys(requiring_secret_keys(setup)),
        settings=settings,
        title="docpipe ingest",
    )
    app.state.upload_slots = UploadSlots(settings.max_concurrent_uploads_per_tenant)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(deletion.router)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    _with_upload_form(app)
    return app
