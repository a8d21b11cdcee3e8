"""The sender loop: claims due deliveries, posts each through the SSRF-pinned transport with
short timeouts, and records the attempt and what follows (delivered, a retry, given up)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import structlog
from standardwebhooks.webhooks import EmptyWebhookSecretError

from services.extractor.ssrf import PinnedBackend, PinnedTransport
from services.progress.store import webhooks as webhook_store
from services.progress.webhooks.delivery import (
    WebhookConfig,
    body_of,
    short_error,
    signed_headers,
    step_after,
    webhook_id,
)
from shared.errors import PermanentError

log = structlog.get_logger(__name__)


def pinned_client(config: WebhookConfig) -> httpx.AsyncClient:
    """A client whose every connection goes to the address that was checked (public, on an
    allowed port, unless allow_private_urls); redirects are not followed."""
    backend = PinnedBackend(
        allow_private=config.allow_private, allowed_ports=list(config.allowed_ports)
    )
    return httpx.AsyncClient(
        transport=PinnedTransport(backend),
        follow_redirects=False,
        timeout=httpx.Timeout(config.timeout_seconds, connect=min(5.0, config.timeout_seconds)),
        trust_env=False,
    )


async def post(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], body: str
) -> tuple[int | None, str | None, bool]:
    """(status code, error sentence, permanent) of one POST; the answer's body is not read."""
    try:
        async with client.stream("POST", url, headers=headers, content=body) as response:
            code = response.status_code
    except PermanentError as exc:
        return None, exc.reason, True
    except httpx.InvalidURL as exc:
        return None, f"The callback URL is not valid: {exc}", True
    except (httpx.HTTPError, OSError) as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, False
    if 200 <= code < 300:
        return code, None, False
    if 300 <= code < 400:
        return code, f"The receiver answered {code}; redirects are not followed.", False
    return code, f"The receiver answered {code}.", False


async def attempt_one(
    client: httpx.AsyncClient, config: WebhookConfig, row: Any
) -> webhook_store.Attempt:
    """Send one claimed delivery once and say what becomes of it."""
    started = datetime.now(UTC)
    clock = time.perf_counter()
    secret = config.secret_for(row["tenant"])
    code: int | None
    error: str | None
    if secret is None:
        code, error, permanent = None, no_secret(row["tenant"]), False
    else:
        body = body_of(row, config.public_url)
        try:
            headers = signed_headers(secret, webhook_id(row["delivery_id"]), body, started)
        except (ValueError, EmptyWebhookSecretError):  # not base64, or empty
            code, error, permanent = None, bad_secret(row["tenant"]), False
        else:
            code, error, permanent = await post(client, row["url"], headers, body)
    latency_ms = (time.perf_counter() - clock) * 1000
    step = step_after(
        ok=error is None,
        failures=row["failures"],
        retry_delays=config.retry_delays,
        now=datetime.now(UTC),
        permanent=permanent,
    )
    return webhook_store.Attempt(
        delivery_id=row["delivery_id"],
        attempt=row["attempts"],
        started_at=started,
        status_code=code,
        latency_ms=latency_ms,
        error=short_error(error) if error else None,
        status=step.status,
        failures=step.failures,
        next_attempt_at=step.next_attempt_at,
    )


def no_secret(tenant: str) -> str:
    return (
        f"No webhook signing secret is configured for tenant {tenant!r} (DOCPIPE_WEBHOOK_SECRETS)."
    )


def bad_secret(tenant: str) -> str:
    return (
        f"The webhook signing secret of tenant {tenant!r} is not valid: expected "
        "whsec_<base64> (DOCPIPE_WEBHOOK_SECRETS)."
    )


async def deliver_due(pool: asyncpg.Pool, config: WebhookConfig) -> int:
    """Claim the due deliveries (at most config.batch), send them concurrently and record
    each attempt; returns how many were claimed."""
    rows = await webhook_store.claim_due(pool, config.batch, config.lease_seconds)
    if not rows:
        return 0
    async with pinned_client(config) as client:
        outcomes = await asyncio.gather(
            *(attempt_one(client, config, row) for row in rows), return_exceptions=True
        )
    # One attempt's unexpected error must not lose the others' records (they were sent); its
    # row comes due again when its lease runs out.
    attempts = [a for a in outcomes if isinstance(a, webhook_store.Attempt)]
    for error in (e for e in outcomes if isinstance(e, BaseException)):
        if not isinstance(error, Exception):
            raise error
        log.error("webhook attempt failed unexpectedly", exc_info=error)
    for attempt in attempts:
        await webhook_store.record_attempt(pool, attempt)
        log.info(
            "webhook attempt",
            delivery_id=str(attempt.delivery_id),
            attempt=attempt.attempt,
            status_code=attempt.status_code,
            outcome=attempt.status,
            latency_ms=round(attempt.latency_ms, 1),
        )
    return len(rows)


async def sender_loop(pool: asyncpg.Pool, config: WebhookConfig) -> None:
    """Deliver until cancelled: at once again after a full round, else after a short pause."""
    while True:
        try:
            claimed = await deliver_due(pool, config)
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sending; the leased rows come due again
            log.exception("webhook round failed")
            claimed = 0
        if claimed < config.batch:
            await asyncio.sleep(config.poll_seconds)
