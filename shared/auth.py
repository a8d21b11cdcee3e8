"""Who is calling, and what they may do: FastAPI dependencies shared by the HTTP services.

A key comes in the `Authorization: Bearer <key>` header. It is either one of the settings' keys
(DOCPIPE_API_KEYS, DOCPIPE_ADMIN_KEYS; compared by digest in constant time) or a key added with
`docpipe keys` (shared/keys.py), looked up by its SHA-256 and cached per process for
settings.key_cache_seconds, so a revoked key stops working within that time.

Every route names the scope it needs (SubmitDep, ReadDep, CancelDep, AdminDep, ...); a key
without it gets 403 with a sentence naming the scope. WebSockets take the header too, or a
short-lived ticket (?ticket=, shared/tickets.py); a long-lived key in ?token= only in dev.

Outside DOCPIPE_ENV=dev there are no default keys, and a service that authenticates refuses to
start without any (refuse_to_start_without_keys).
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import Depends, HTTPException, Request, WebSocket, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared import keys as key_store
from shared import tickets
from shared.keys import ALL_SCOPES, Scope
from shared.settings import Settings, get_settings

log = structlog.get_logger(__name__)

WS_UNAUTHORIZED = 4401
WS_FORBIDDEN = 4403
# Unknown keys remembered per process; beyond this the cache starts over (bounded memory).
KEY_CACHE_MAX = 10_000
TENANT_KEY_SCOPES = frozenset({Scope.SUBMIT, Scope.READ, Scope.CANCEL})


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `key_id` names the key (never the key itself); `tenant` is the
    tenant it submits as and, unless `all_tenants`, the only one whose jobs it sees."""

    key_id: str
    tenant: str | None
    scopes: frozenset[Scope]
    all_tenants: bool = False

    @property
    def admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def has(self, scope: Scope) -> bool:
        return scope in self.scopes


def visible_tenant(principal: Principal) -> str | None:
    """The tenant whose jobs the caller may see; None: every tenant's."""
    return None if principal.all_tenants else principal.tenant


def may_see(principal: Principal, tenant: str | None) -> bool:
    return principal.all_tenants or (tenant is not None and principal.tenant == tenant)


def _settings_principals(settings: Settings) -> list[tuple[bytes, Principal]]:
    tenants = settings.tenants_by_key
    admins = settings.admin_key_set
    out: list[tuple[bytes, Principal]] = []
    for key in {*tenants, *admins}:
        admin = key in admins
        principal = Principal(
            key_id=key_store.fingerprint(key),
            tenant=tenants.get(key),
            scopes=ALL_SCOPES if admin else TENANT_KEY_SCOPES,
            all_tenants=admin,
        )
        out.append((key_store.key_digest(key), principal))
    return out


def _stored_principal(stored: key_store.StoredKey) -> Principal:
    return Principal(
        key_id=stored.key_id,
        tenant=stored.tenant,
        scopes=stored.scopes,
        all_tenants=stored.tenant is None and Scope.ADMIN in stored.scopes,
    )


class KeyResolver:
    """Resolves keys for one app: the settings' keys, then the api_keys table (cached)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._configured = _settings_principals(settings)
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    def from_settings(self, digest: bytes) -> Principal | None:
        found: Principal | None = None
        for known, principal in self._configured:  # every one compared: no early exit
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    async def resolve(self, key: str | None, pool: asyncpg.Pool | None) -> Principal | None:
        if not key or len(key) > key_store.KEY_MAX_CHARS:
            return None
        digest = key_store.key_digest(key)
        principal = self.from_settings(digest)
        if principal is not None or pool is None or not key.startswith(key_store.KEY_PREFIX):
            return principal
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        stored = await key_store.find_active(pool, digest)
        principal = None if stored is None else _stored_principal(stored)
        if len(self._cache) >= KEY_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + self.settings.key_cache_seconds, principal)
        return principal


def _settings_of(app: Any) -> Settings:
    """The app's own settings (tests build apps with explicit settings), else the environment's."""
    state = getattr(app, "state", None)
    return getattr(state, "settings", None) or get_settings()


def _resolver_of(app: Any) -> KeyResolver:
    resolver: KeyResolver | None = getattr(app.state, "key_resolver", None)
    if resolver is None:
        resolver = app.state.key_resolver = KeyResolver(_settings_of(app))
    return resolver


def _pool_of(app: Any) -> asyncpg.Pool | None:
    ctx = getattr(app.state, "ctx", None)
    return getattr(ctx, "pool", None)


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


async def authenticate(app: Any, key: str | None) -> Principal | None:
    return await _resolver_of(app).resolve(key, _pool_of(app))


_UNAUTHORIZED = HTTPException(
    status_code=status.HTTP_401_UNAUTHORIZED,
    detail="A valid API key is required: send 'Authorization: Bearer <key>'.",
    headers={"WWW-Authenticate": "Bearer"},
)


# Declares the key in the OpenAPI documents (a security scheme on every route behind a key);
# the header is read by require_principal itself, so a missing one answers our 401 sentence.
BEARER_SCHEME = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key: 'Authorization: Bearer <key>'.",
)
DeclaredBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER_SCHEME)]


async def require_principal(request: Request, _declared: DeclaredBearer = None) -> Principal:
    """Any valid key, whatever its scopes."""
    principal = await authenticate(request.app, _bearer(request.headers.get("authorization")))
    if principal is None:
        raise _UNAUTHORIZED
    return principal


def missing_scope(scope: Scope) -> str:
    return f"This key lacks the '{scope}' scope, which this call needs."


NOT_EVERY_TENANT = (
    "This admin key is limited to one tenant; this call covers every tenant's data and needs "
    "an admin key for all tenants."
)

ScopeCheck = Callable[[Principal], Coroutine[Any, Any, Principal]]


def require_scope(scope: Scope, *, every_tenant: bool = False) -> ScopeCheck:
    """A dependency: a valid key with `scope` (and, with every_tenant, over all tenants).
    The route's scope is readable as `.scope` (the route-by-route tests walk it)."""

    async def check(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
        if not principal.has(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=missing_scope(scope))
        if every_tenant and not principal.all_tenants:
            raise HTTPException(status.HTTP_403_FORBIDDEN, detail=NOT_EVERY_TENANT)
        return principal

    check.scope = scope  # type: ignore[attr-defined]
    return check


# --- WebSockets ---------------------------------------------------------------------------


# Close reasons fit a close frame's 123 bytes.
TOKEN_REFUSED = (
    "A key in the URL (?token=) is refused outside dev: send it in a header, or use a ticket "
    "(POST .../ws-ticket)."
)
WS_NOT_EVERY_TENANT = "This admin key is limited to one tenant; this stream covers every tenant."


def _ticket_principal(ticket: tickets.Ticket) -> Principal:
    return Principal(
        key_id=ticket.key_id,
        tenant=ticket.tenant,
        scopes=frozenset(Scope(s) for s in ticket.scopes if s in ALL_SCOPES),
        all_tenants=ticket.all_tenants,
    )


async def _websocket_caller(
    websocket: WebSocket, kind: tickets.SubjectKind, subject: str
) -> Principal | str:
    """The caller of a WebSocket, or the sentence to close it with."""
    settings = _settings_of(websocket.app)
    header_key = _bearer(websocket.headers.get("authorization"))
    ticket = websocket.query_params.get("ticket")
    token = websocket.query_params.get("token")
    if header_key is None and ticket is not None:
        try:
            claims = tickets.verify(
                tickets.ticket_secret(settings), ticket, kind=kind, subject=subject
            )
        except tickets.TicketRefused as exc:
            return str(exc)
        return _ticket_principal(claims)
    if header_key is None and token is not None and not settings.is_dev:
        return TOKEN_REFUSED
    principal = await authenticate(websocket.app, header_key or token)
    return "A valid API key or ticket is required." if principal is None else principal


async def accept_websocket(
    websocket: WebSocket,
    *,
    kind: tickets.SubjectKind,
    subject: str,
    scope: Scope = Scope.READ,
    every_tenant: bool = False,
) -> Principal | None:
    """Accept the WebSocket, then authenticate it: the caller, or None after closing with
    4401 (no valid key or ticket) or 4403 (a key without the scope) and the reason."""
    # Accept first: a close before accepting would surface as HTTP 403, not our close code.
    await websocket.accept()
    caller = await _websocket_caller(websocket, kind, subject)
    if isinstance(caller, str):
        await websocket.close(WS_UNAUTHORIZED, caller)
        return None
    if not caller.has(scope):
        await websocket.close(WS_FORBIDDEN, missing_scope(scope))
        return None
    if every_tenant and not caller.all_tenants:
        await websocket.close(WS_FORBIDDEN, WS_NOT_EVERY_TENANT)
        return None
    return caller


def issue_ticket(
    settings: Settings, principal: Principal, kind: tickets.SubjectKind, subject: str
) -> tuple[str, float]:
    """A ticket for `subject` carrying the principal's view, and when it expires."""
    expires_at = time.time() + settings.ticket_ttl_seconds
    ticket = tickets.Ticket(
        kind=kind,
        subject=subject,
        key_id=principal.key_id,
        tenant=principal.tenant,
        all_tenants=principal.all_tenants,
        scopes=tuple(sorted(principal.scopes)),
        expires_at=expires_at,
    )
    return tickets.issue(tickets.ticket_secret(settings), ticket), expires_at


# --- start-up -----------------------------------------------------------------------------


class KeysMissing(RuntimeError):
    pass


NO_KEYS = (
    "Refusing to start: no API key is configured. Set DOCPIPE_API_KEYS and DOCPIPE_ADMIN_KEYS, "
    "or add a key with `docpipe keys add`; development keys exist only with DOCPIPE_ENV=dev."
)


async def refuse_to_start_without_keys(settings: Settings, pool: asyncpg.Pool) -> None:
    """Outside dev, a service that authenticates needs at least one key, or it stops here."""
    if settings.api_keys.strip() or settings.admin_keys.strip():
        return
    if await key_store.any_active(pool):
        return
    log.error("refusing to start", reason=NO_KEYS)
    raise KeysMissing(NO_KEYS)


Setup = Callable[[Any], Awaitable[None] | None]


def requiring_keys(setup: Setup) -> Callable[[Any], Awaitable[None]]:
    """`setup`, run only once the service has a key to check callers against."""

    async def checked(ctx: Any) -> None:
        await refuse_to_start_without_keys(ctx.settings, ctx.pool)
        result = setup(ctx)
        if asyncio.iscoroutine(result):
            await result

    return checked


PrincipalDep = Annotated[Principal, Depends(require_principal)]
SubmitDep = Annotated[Principal, Depends(require_scope(Scope.SUBMIT))]
ReadDep = Annotated[Principal, Depends(require_scope(Scope.READ))]
CancelDep = Annotated[Principal, Depends(require_scope(Scope.CANCEL))]
# Admin routes over every tenant's data (the admin page, dead letters): an admin key for all
# tenants. TenantAdminDep: the admin scope, limited to the key's tenant when it has one.
AdminDep = Annotated[Principal, Depends(require_scope(Scope.ADMIN, every_tenant=True))]
TenantAdminDep = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]
