"""Dependencies of the job API, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from services.ingest.limits import UploadSlots
from services.ingest.runtime import IngestRuntime
from shared.auth import CancelDep, PrincipalDep, ReadDep, SubmitDep, visible_tenant
from shared.service import ServiceContext


def get_upload_slots(request: Request) -> UploadSlots:
    slots: UploadSlots = request.app.state.upload_slots
    return slots


def get_runtime(request: Request) -> IngestRuntime:
    """The running service's connections (set up by the lifespan) with the upload cap."""
    ctx: ServiceContext = request.app.state.ctx
    return IngestRuntime(ctx.settings, ctx.pool, ctx.bus, ctx.blobs, get_upload_slots(request))


def get_pool(runtime: Annotated[IngestRuntime, Depends(get_runtime)]) -> asyncpg.Pool:
    return runtime.pool


def get_request_id(request: Request) -> str:
    request_id: str = getattr(request.state, "request_id", None) or ""
    return request_id


RuntimeDep = Annotated[IngestRuntime, Depends(get_runtime)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RequestIdDep = Annotated[str, Depends(get_request_id)]

__all__ = [
    "CancelDep",
    "PoolDep",
    "PrincipalDep",
    "ReadDep",
    "RequestIdDep",
    "RuntimeDep",
    "SubmitDep",
    "visible_tenant",
]
