"""Bearer-key authentication shared by the HTTP services (FastAPI dependencies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request, WebSocket, status

from shared.settings import Settings, get_settings


@dataclass(frozen=True)
class Principal:
    key: str
    tenant: str | None  # None for an admin key that maps to no tenant
    admin: bool


def resolve_key(settings: Settings, key: str | None) -> Principal | None:
    if not key:
        return None
    tenant = settings.tenants_by_key.get(key)
    admin = key in settings.admin_key_set
    if tenant is None and not admin:
        return None
    return Principal(key=key, tenant=tenant, admin=admin)


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="A valid API key is required: send 'Authorization: Bearer <key>'.",
    headers={"WWW-Authenticate": "Bearer"},
)


def _settings_of(app: object) -> Settings:
    """The app's own settings (tests build apps with explicit settings), else the environment's."""
    state = getattr(app, "state", None)
    return getattr(state, "settings", None) or get_settings()


def require_principal(request: Request) -> Principal:
    settings = _settings_of(request.app)
    principal = resolve_key(settings, _bearer(request.headers.get("authorization")))
    if principal is None:
        raise _UNAUTHORIZED
    return principal


def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    if not principal.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="This needs an admin key.")
    return principal


def websocket_principal(
    websocket: WebSocket, token: Annotated[str | None, Query()] = None
) -> Principal | None:
    """The key as a header, or as ?token= since browsers cannot set WebSocket headers."""
    settings = _settings_of(websocket.app)
    return resolve_key(settings, _bearer(websocket.headers.get("authorization")) or token)


PrincipalDep = Annotated[Principal, Depends(require_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
