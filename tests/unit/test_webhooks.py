"""Webhooks without a database: the retry schedule, the body and its Standard Webhooks
signature (checked by the library a receiver uses), the callback URL rules at submit, and one
attempt of the sender against a real HTTP receiver."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.ingest.callbacks import BadCallbackUrl, callback_url_problem, check_callback_url
from services.progress.webhooks.delivery import (
    WebhookConfig,
    body_of,
    dev_secret,
    signed_headers,
    step_after,
    webhook_id,
)
from services.progress.webhooks.sender import attempt_one, pinned_client
from shared.settings import Settings
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0zMi1ieXRlcy1sb25nISE="
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def delivery_row(**over: Any) -> dict[str, Any]:
    row = {
        "delivery_id": uuid.UUID(int=7),
        "tenant": "dev",
        "job_id": uuid.UUID(int=1),
        "batch_id": None,
        "event_type": "job.completed",
        "url": "http://127.0.0.1:9/hooks",
        "data": {"job_id": str(uuid.UUID(int=1)), "status": "completed", "error": None},
        "attempts": 1,
        "failures": 0,
        "created_at": NOW,
    }
    return {**row, **over}


def config(**over: Any) -> WebhookConfig:
    # Outside dev (the suite's environment sets DOCPIPE_ENV=dev): no dev secrets unless asked.
    settings = Settings(
        env="production",
        webhook_secrets=f"dev={SECRET}",
        allow_private_urls=True,
        webhook_retry_delays_seconds=[1.0, 2.0],
        webhook_timeout_seconds=5.0,
    )
    return WebhookConfig(**{**WebhookConfig.of(settings).__dict__, **over})


def test_the_default_schedule_retries_for_more_than_a_day() -> None:
    delays = Settings().webhook_retry_delays_seconds
    assert sum(delays) >= 24 * 3600
    assert delays == sorted(delays), "delays grow"


def test_a_failure_is_retried_after_the_delay_of_its_rank_then_given_up() -> None:
    delays = (5.0, 30.0)
    first = step_after(ok=False, failures=0, retry_delays=delays, now=NOW)
    assert (first.status, first.failures, first.next_attempt_at) == (
        "pending",
        1,
        NOW + timedelta(seconds=5),
    )
    second = step_after(ok=False, failures=1, retry_delays=delays, now=NOW)
    assert second.next_attempt_at == NOW + timedelta(seconds=30)
    last = step_after(ok=False, failures=2, retry_delays=delays, now=NOW)
    assert (last.status, last.next_attempt_at) == ("failed", None)
    assert step_after(ok=True, failures=1, retry_delays=delays, now=NOW).status == "delivered"
    refused = step_after(ok=False, failures=0, retry_delays=delays, now=NOW, permanent=True)
    assert refused.status == "failed"


def test_the_body_is_the_same_at_every_attempt_and_links_the_result() -> None:
    row = delivery_row()
    body = body_of(row, "https://api.example.com")
    assert body == body_of(row, "https://api.example.com")
    event = json.loads(body)
    assert event["type"] == "job.completed"
    assert event["timestamp"] == NOW.isoformat()
    assert event["data"]["result_url"] == (
        f"https://api.example.com/v1/jobs/{uuid.UUID(int=1)}/result"
    )
    batch = json.loads(
        body_of(delivery_row(job_id=None, batch_id=uuid.UUID(int=3)), "https://a.example")
    )
    assert batch["data"]["result_url"] == f"https://a.example/v1/batches/{uuid.UUID(int=3)}/result"


def test_the_signature_verifies_with_standardwebhooks_and_not_once_tampered() -> None:
    body = body_of(delivery_row(), "https://api.example.com")
    now = datetime.now(UTC)
    headers = signed_headers(SECRET, webhook_id(uuid.UUID(int=7)), body, now)
    assert headers["webhook-id"] == f"msg_{uuid.UUID(int=7).hex}"
    assert headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(SECRET).verify(body, headers)["type"] == "job.completed"
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace("completed", "failed"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(dev_secret("other")).verify(body, headers)


def test_secrets_come_from_the_settings_and_dev_secrets_only_in_dev() -> None:
    assert config().secret_for("dev") == SECRET
    assert config().secret_for("other") is None
    assert config(dev_secrets=True).secret_for("other") == dev_secret("other")
    assert WebhookConfig.of(Settings(env="dev")).dev_secrets
    assert not WebhookConfig.of(Settings(env="production")).dev_secrets
    assert dev_secret("a") != dev_secret("b")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/hook", "http or https"),
        ("https:///nohost", "no host"),
        ("https://example.com:8443/hook", "port 8443 is not allowed"),
        ("not a url at all", "http or https"),
    ],
)
def test_a_callback_url_of_the_wrong_form_is_refused(url: str, problem: str) -> None:
    reason = callback_url_problem(url, Settings())
    assert reason is not None and problem in reason


def test_a_public_callback_url_on_an_allowed_port_is_accepted() -> None:
    assert callback_url_problem("https://hooks.example.com/x?token=1", Settings()) is None
    assert callback_url_problem("http://hooks.example.com:8080/x", Settings()) is not None
    assert (
        callback_url_problem("http://hooks.example.com:8080/x", Settings(allow_private_urls=True))
        is None
    )


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/hook", "http://10.1.2.3/hook", "http://[::1]/x", "http://100.64.0.1/"]
)
async def test_a_callback_url_to_a_private_address_is_refused(url: str) -> None:
    with pytest.raises(BadCallbackUrl) as refused:
        await check_callback_url(url, Settings())
    assert "private or local network" in str(refused.value)
    await check_callback_url(url, Settings(allow_private_urls=True))


async def test_one_attempt_against_a_real_receiver_fails_then_succeeds() -> None:
    with WebhookReceiver(SECRET, failures=1) as receiver:
        row = delivery_row(url=receiver.url)
        async with pinned_client(config()) as client:
            first = await attempt_one(client, config(), row)
            second = await attempt_one(client, config(), {**row, "attempts": 2, "failures": 1})
    assert (first.status_code, first.status, first.failures) == (500, "pending", 1)
    assert first.error == "The receiver answered 500."
    assert (second.status_code, second.status, second.error) == (200, "delivered", None)
    assert [r.verified for r in receiver.received] == [True, True]
    assert receiver.successes() == {webhook_id(uuid.UUID(int=7)): 1}
    # Both attempts sent the same body under the same id.
    assert receiver.received[0].body == receiver.received[1].body


async def test_an_address_refused_at_connect_time_gives_up_at_once() -> None:
    strict = config(allow_private=False)
    async with pinned_client(strict) as client:
        attempt = await attempt_one(client, strict, delivery_row(url="http://127.0.0.1/hooks"))
    assert attempt.status == "failed" and attempt.status_code is None
    assert attempt.error is not None and "private or local network" in attempt.error


async def test_a_tenant_without_a_secret_is_not_sent_to_and_says_why() -> None:
    async with pinned_client(config()) as client:
        attempt = await attempt_one(client, config(), delivery_row(tenant="other"))
    assert attempt.status == "pending" and attempt.status_code is None
    assert attempt.error is not None and "DOCPIPE_WEBHOOK_SECRETS" in attempt.error


def test_a_malformed_secret_is_refused_by_the_settings() -> None:
    with pytest.raises(ValueError, match="tenant 'dev'"):
        Settings(webhook_secrets="dev=whsec_%%%")


async def test_a_malformed_secret_is_recorded_not_raised() -> None:
    broken = config(secrets={"dev": "whsec_%%%"})
    async with pinned_client(broken) as client:
        attempt = await attempt_one(client, broken, delivery_row())
    assert attempt.status == "pending" and attempt.status_code is None
    assert attempt.error is not None and "not valid" in attempt.error
