"""Short-lived signed tickets for WebSockets: a browser cannot send an Authorization header
when it opens a WebSocket, and a long-lived key in a URL ends up in access logs and browser
history. So the browser asks for a ticket with its key in a header (POST .../ws-ticket) and
opens the WebSocket with ?ticket=: a ticket names one subject (a job, a batch, the admin
stream), carries what its key may see, and expires after a minute.

A ticket is `v1.<payload>.<signature>`: the payload is base64url JSON, the signature its
HMAC-SHA256 under the ticket secret (settings.ticket_secret).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from shared.settings import Settings

log = structlog.get_logger(__name__)

VERSION = "v1"
TICKET_MAX_CHARS = 2048
# Without a configured secret outside dev: one per process (see settings.ticket_secret).
_PROCESS_SECRET = secrets.token_bytes(32)
_DEV_SECRET = hashlib.sha256(b"docpipe development ticket secret").digest()


class SubjectKind(StrEnum):
    JOB = "job"
    BATCH = "batch"
    ADMIN_EVENTS = "admin-events"


class TicketRefused(ValueError):
    """A ticket that does not open this WebSocket, with the sentence that says why."""


@dataclass(frozen=True)
class Ticket:
    kind: SubjectKind
    subject: str
    key_id: str
    tenant: str | None
    all_tenants: bool
    scopes: tuple[str, ...]
    expires_at: float

    def payload(self) -> dict[str, Any]:
        return {
            "k": self.kind.value,
            "s": self.subject,
            "a": self.key_id,
            "t": self.tenant,
            "all": self.all_tenants,
            "sc": list(self.scopes),
            "e": round(self.expires_at, 3),
        }


def ticket_secret(settings: Settings) -> bytes:
    configured = settings.ticket_secret.get_secret_value()
    if configured:
        return configured.encode()
    return _DEV_SECRET if settings.is_dev else _PROCESS_SECRET


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, f"{VERSION}.{payload}".encode(), hashlib.sha256).digest())


def issue(secret: bytes, ticket: Ticket) -> str:
    payload = _b64(json.dumps(ticket.payload(), separators=(",", ":")).encode())
    return f"{VERSION}.{payload}.{_sign(secret, payload)}"


def _parse(text: str) -> Ticket:
    try:
        data = json.loads(_unb64(text))
        return Ticket(
            kind=SubjectKind(data["k"]),
            subject=str(data["s"]),
            key_id=str(data["a"]),
            tenant=None if data["t"] is None else str(data["t"]),
            all_tenants=bool(data["all"]),
            scopes=tuple(str(s) for s in data["sc"]),
            expires_at=float(data["e"]),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TicketRefused("The ticket is malformed.") from None


def verify(
    secret: bytes,
    text: str,
    *,
    kind: SubjectKind,
    subject: str,
    now: float | None = None,
) -> Ticket:
    """The ticket's claims, if it is genuine, unexpired and for this subject."""
    parts = text.split(".") if len(text) <= TICKET_MAX_CHARS else []
    if len(parts) != 3 or parts[0] != VERSION:
        raise TicketRefused("The ticket is malformed.")
    if not hmac.compare_digest(_sign(secret, parts[1]), parts[2]):
        raise TicketRefused("The ticket's signature is not valid.")
    ticket = _parse(parts[1])
    if ticket.expires_at < (time.time() if now is None else now):
        raise TicketRefused("The ticket has expired: ask for a new one.")
    if ticket.kind is not kind or ticket.subject != subject:
        raise TicketRefused(f"The ticket is for another {ticket.kind.value}, not this one.")
    return ticket
