"""The progress service's runtime objects, and typed accessors for its routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from fastapi import Depends
from starlette.requests import HTTPConnection

from services.progress.batcher import WindowBatcher
from services.progress.hub import BatchHub, Hub
from shared.service import ServiceContext


@dataclass
class ProgressRuntime:
    """What the progress service keeps for its life: built by create_app, filled by setup."""

    hub: Hub
    batcher: WindowBatcher | None = None
    batch_hub: BatchHub = field(default_factory=BatchHub)


def runtime_of(app: Any) -> ProgressRuntime:
    runtime: ProgressRuntime = app.state.runtime
    return runtime


def ctx_of(app: Any) -> ServiceContext:
    ctx: ServiceContext = app.state.ctx
    return ctx


def get_ctx(conn: HTTPConnection) -> ServiceContext:
    return ctx_of(conn.app)


def get_pool(conn: HTTPConnection) -> asyncpg.Pool:
    return ctx_of(conn.app).pool


def get_hub(conn: HTTPConnection) -> Hub:
    return runtime_of(conn.app).hub


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
HubDep = Annotated[Hub, Depends(get_hub)]


def get_batch_hub(conn: HTTPConnection) -> BatchHub:
    return runtime_of(conn.app).batch_hub


BatchHubDep = Annotated[BatchHub, Depends(get_batch_hub)]
