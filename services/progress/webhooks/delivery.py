"""What a delivery sends and what becomes of it, without I/O: the configuration read from
the settings, the body, the signed headers, and the step after an attempt."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from standardwebhooks.webhooks import Webhook

from shared.settings import Settings, parse_key_map

USER_AGENT = "docpipe-webhooks/1"
# Longest error sentence kept per attempt.
ERROR_MAX = 500


def dev_secret(tenant: str) -> str:
    """The fixed secret a tenant without one gets in development (DOCPIPE_ENV=dev)."""
    digest = hashlib.sha256(f"docpipe-dev-webhook-secret:{tenant}".encode()).digest()
    return "whsec_" + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class WebhookConfig:
    secrets: Mapping[str, str]
    dev_secrets: bool
    retry_delays: tuple[float, ...]
    timeout_seconds: float
    poll_seconds: float
    batch: int
    public_url: str
    allow_private: bool
    allowed_ports: tuple[int, ...]

    @classmethod
    def of(cls, settings: Settings) -> WebhookConfig:
        public = settings.webhook_public_url or f"http://{settings.host}:{settings.ingest_port}"
        return cls(
            secrets=parse_key_map(settings.webhook_secrets),
            dev_secrets=settings.is_dev,
            retry_delays=tuple(settings.webhook_retry_delays_seconds),
            timeout_seconds=settings.webhook_timeout_seconds,
            poll_seconds=settings.webhook_poll_seconds,
            batch=settings.webhook_batch,
            public_url=public.rstrip("/"),
            allow_private=settings.allow_private_urls,
            allowed_ports=tuple(settings.webhook_allowed_ports),
        )

    def secret_for(self, tenant: str) -> str | None:
        secret = self.secrets.get(tenant)
        if secret is None and self.dev_secrets:
            return dev_secret(tenant)
        return secret

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery is left to its sender before another may take it."""
        return self.timeout_seconds + 30.0


def webhook_id(delivery_id: uuid.UUID) -> str:
    return f"msg_{delivery_id.hex}"


def body_of(row: Mapping[str, Any], public_url: str) -> str:
    """The JSON body of a delivery: the same bytes at every attempt (the signature covers
    them, and receivers may compare retries)."""
    data = dict(row["data"])
    if row["job_id"] is not None:
        data["result_url"] = f"{public_url}/v1/jobs/{row['job_id']}/result"
    else:
        data["result_url"] = f"{public_url}/v1/batches/{row['batch_id']}/result"
    created: datetime = row["created_at"]
    event = {"type": row["event_type"], "timestamp": created.isoformat(), "data": data}
    return json.dumps(event, separators=(",", ":"), sort_keys=True)


def signed_headers(secret: str, msg_id: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (its timestamp is the attempt's time)."""
    signature = Webhook(secret).sign(msg_id, now.astimezone(UTC), body)
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


@dataclass(frozen=True)
class Step:
    status: str  # delivered, pending (retry at next_attempt_at) or failed (given up)
    failures: int
    next_attempt_at: datetime | None


def step_after(
    *,
    ok: bool,
    failures: int,
    retry_delays: tuple[float, ...],
    now: datetime,
    permanent: bool = False,
) -> Step:
    """After an attempt: delivered; or retried after the delay of this failure's rank; or,
    once the delays are used up (or the URL can never be reached), given up."""
    if ok:
        return Step("delivered", failures, None)
    failures += 1
    if permanent or failures > len(retry_delays):
        return Step("failed", failures, None)
    return Step("pending", failures, now + timedelta(seconds=retry_delays[failures - 1]))


def short_error(text: str) -> str:
    return text if len(text) <= ERROR_MAX else text[: ERROR_MAX - 1] + "…"
