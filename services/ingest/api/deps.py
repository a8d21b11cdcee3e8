"""Dependencies of the job API, as Annotated aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from shared.auth import Principal, PrincipalDep
from shared.service import ServiceContext
from shared.settings import Settings


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_pool(ctx: Annotated[ServiceContext, Depends(get_ctx)]) -> asyncpg.Pool:
    return ctx.pool


def get_request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or ""


def visible_tenant(principal: Principal) -> str | None:
    """The tenant whose jobs the caller may see; None for an admin, who sees every job."""
    return None if principal.admin else principal.tenant


CtxDep = Annotated[ServiceContext, Depends(get_ctx)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
RequestIdDep = Annotated[str, Depends(get_request_id)]

__all__ = [
    "CtxDep",
    "PoolDep",
    "PrincipalDep",
    "RequestIdDep",
    "SettingsDep",
    "visible_tenant",
]
