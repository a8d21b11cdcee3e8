"""Webhooks: a signed JSON event, sent to a callback URL, when a job completes, fails or is
cancelled (`job.completed`, `job.failed`, `job.cancelled`) and when a batch's last job ends
(`batch.completed`).

Where: the job's `callback_url` (given at submit), a batch's for its batch.completed, else
the tenant's default (DOCPIPE_WEBHOOK_DEFAULTS, copied at start-up into webhook_endpoints).

When: the delivery row is written by the transaction that ends the job (hooks.py, called
where progress saves job rows), so an event is queued exactly when its job ended and is never
lost. The sender loop (sender.py; any number of progress replicas) claims due rows with
SKIP LOCKED, posts them through the SSRF-pinned transport and records every attempt. A
failure is retried after each of DOCPIPE_WEBHOOK_RETRY_DELAYS_SECONDS in turn (~32 h by
default), then the delivery is given up. Delivery is at least once: the receiver
deduplicates on `webhook-id`, which stays the same across retries and redeliveries.

How: Standard Webhooks (https://www.standardwebhooks.com): headers `webhook-id`,
`webhook-timestamp` and `webhook-signature` (`v1,<base64 HMAC-SHA256>`), signed with the
tenant's secret from DOCPIPE_WEBHOOK_SECRETS by the `standardwebhooks` library. A body:

    {"type": "job.completed", "timestamp": "<when the job ended>",
     "data": {"job_id", "status", "error", "filename", "format", "pages_total", "batch_id",
              "finished_at", "result_url"}}

Routes (routes.py): GET /v1/jobs/{id}/webhooks lists a job's deliveries and attempts;
POST /v1/admin/webhooks/{id}/redeliver queues one again.
"""

from __future__ import annotations

import asyncpg
import structlog
from tenacity import AsyncRetrying, wait_exponential

from services.progress.store import webhooks as webhook_store
from services.progress.webhooks.delivery import WebhookConfig
from services.progress.webhooks.sender import sender_loop
from shared.settings import Settings, parse_key_map

log = structlog.get_logger(__name__)


async def run(pool: asyncpg.Pool, settings: Settings) -> None:
    """The progress service's webhook task: take the tenants' default URLs from the
    settings (until the database answers), then send until cancelled."""
    async for attempt in AsyncRetrying(
        wait=wait_exponential(multiplier=0.5, max=30),
        before_sleep=lambda state: log.warning(
            "webhook endpoints not synced yet",
            error=repr(state.outcome and state.outcome.exception()),
        ),
    ):
        with attempt:
            await webhook_store.sync_endpoints(pool, parse_key_map(settings.webhook_defaults))
    await sender_loop(pool, WebhookConfig.of(settings))
