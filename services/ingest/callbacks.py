"""A job's callback URL, checked at submit with the rules its webhook is sent by
(services/progress/webhooks): http or https, a host, an allowed port, and an address that is
public (services/extractor/ssrf.py's filter) unless allow_private_urls. The sender checks the
address again when it connects, pinned, so a name that resolves elsewhere later is refused
then."""

from __future__ import annotations

from typing import Any

import httpx

from services.extractor.ssrf import checked_addresses
from services.ingest.errors import InvalidRequest
from shared.errors import PermanentError
from shared.settings import Settings

DEFAULT_PORTS = {"http": 80, "https": 443}


class BadCallbackUrl(InvalidRequest):
    def __init__(self, msg: str) -> None:
        error: dict[str, Any] = {
            "type": "callback_url",
            "loc": ("body", "callback_url"),
            "msg": msg,
            "input": None,
        }
        super().__init__([error])


def callback_url_problem(url: str, settings: Settings) -> str | None:
    """What is wrong with the URL's form (None: nothing)."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        return "The callback URL is not a valid URL."
    if target.scheme not in DEFAULT_PORTS:
        return f"The callback URL must use http or https, not {target.scheme or 'nothing'!r}."
    if not target.host:
        return "The callback URL has no host name."
    port = target.port or DEFAULT_PORTS[target.scheme]
    if not settings.allow_private_urls and port not in settings.webhook_allowed_ports:
        allowed = ", ".join(str(p) for p in settings.webhook_allowed_ports) or "none"
        return f"The callback URL's port {port} is not allowed (allowed: {allowed})."
    return None


async def check_callback_url(url: str | None, settings: Settings) -> None:
    """Raise BadCallbackUrl when the URL cannot be called back. A host name that does not
    resolve now is accepted (DNS may hiccup; the sender retries and checks again)."""
    if url is None:
        return
    problem = callback_url_problem(url, settings)
    if problem is not None:
        raise BadCallbackUrl(problem)
    if settings.allow_private_urls:
        return
    target = httpx.URL(url)
    try:
        await checked_addresses(
            target.host, target.port or DEFAULT_PORTS[target.scheme], allow_private=False
        )
    except PermanentError:
        raise BadCallbackUrl(
            f"The callback URL's host {target.host} points to a private or local network."
        ) from None
    except ConnectionError:
        return
