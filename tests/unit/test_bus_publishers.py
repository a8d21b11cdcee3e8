"""Who may name which tenant on an upload: the pure policy, and the pipeline step around the
handler, driven through the in-memory bus (shared/bus/identity.py, CheckPublisher)."""

from __future__ import annotations

import uuid

import pytest

from shared import topology
from shared.bus import Delivery, InboundMessage, MemoryBus
from shared.bus.identity import H_PUBLISHED_BY, PublisherPolicy, amqp_user_of, url_with_user
from shared.events import DocumentUploaded
from shared.settings import Settings

POLICY = PublisherPolicy(
    {"upstream-acme": "acme"}, frozenset({"docpipe-ingest", "docpipe-extractor"})
)
DEV_POLICY = PublisherPolicy(POLICY.tenants_by_user, POLICY.trusted_users, accept_unknown=True)


def upload(tenant: str) -> DocumentUploaded:
    return DocumentUploaded(
        job_id=uuid.uuid4(), tenant=tenant, document_uri="blob://sha256/" + "a" * 64
    )


def test_an_upstream_user_publishes_for_its_own_tenant_only() -> None:
    assert POLICY.refusal("upstream-acme", "acme") is None
    reason = POLICY.refusal("upstream-acme", "globex")
    assert reason == "the publisher 'upstream-acme' publishes for tenant 'acme' only"
    # Development changes nothing here: a mapped user never names another tenant.
    assert DEV_POLICY.refusal("upstream-acme", "globex") == reason


def test_a_trusted_service_user_carries_any_tenant() -> None:
    assert POLICY.refusal("docpipe-ingest", "acme") is None
    assert POLICY.refusal("docpipe-ingest", "globex") is None


def test_no_user_or_an_unknown_user_is_refused_outside_dev_only() -> None:
    assert POLICY.refusal(None, "acme") == "the message names no publisher (user_id)"
    assert POLICY.refusal("guest", "acme") == "the publisher 'guest' is not mapped to a tenant"
    assert DEV_POLICY.refusal(None, "acme") is None
    assert DEV_POLICY.refusal("guest", "acme") is None


def message(user_id: str | None, headers: dict[str, str] | None = None) -> InboundMessage:
    return InboundMessage(b"{}", headers or {}, "document.uploaded", user_id=user_id)


def test_the_first_publisher_is_believed_only_from_a_trusted_user() -> None:
    # A retry by the extractor keeps who first published the upload.
    relayed = message("docpipe-extractor", {H_PUBLISHED_BY: "upstream-acme"})
    assert POLICY.publisher_of(relayed) == "upstream-acme"
    assert POLICY.publisher_of(message("docpipe-extractor", {H_PUBLISHED_BY: ""})) is None
    # An upstream user writing the header names nobody but itself.
    forged = message("upstream-acme", {H_PUBLISHED_BY: "docpipe-ingest"})
    assert POLICY.publisher_of(forged) == "upstream-acme"
    assert POLICY.publisher_of(message("docpipe-ingest")) == "docpipe-ingest"


def test_the_settings_map_users_to_tenants_and_dev_has_its_upstream_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCPIPE_AMQP_TENANTS", '{"upstream-acme": "acme"}')
    monkeypatch.setenv("DOCPIPE_AMQP_TRUSTED_USERS", "docpipe-ingest, docpipe-progress")
    settings = Settings(env="production")
    policy = PublisherPolicy.from_settings(settings)
    assert policy.tenants_by_user == {"upstream-acme": "acme"}
    assert policy.trusted_users == {"docpipe-ingest", "docpipe-progress"}
    assert not policy.accept_unknown
    monkeypatch.delenv("DOCPIPE_AMQP_TENANTS")
    dev = Settings(env="dev")
    assert dev.amqp_tenants == {"upstream-dev": "dev", "upstream-other": "other"}
    assert PublisherPolicy.from_settings(dev).accept_unknown


def test_the_bus_prefix_has_no_dot() -> None:
    # The RabbitMQ users' permission regexes take the prefix as the first dotted word.
    with pytest.raises(ValueError, match="bus_prefix"):
        Settings(bus_prefix="docpipe.evil")


def test_amqp_urls_name_their_user() -> None:
    url = url_with_user("amqp://guest:guest@broker:5672/", "docpipe-ocr", "s3cret")
    assert url == "amqp://docpipe-ocr:s3cret@broker:5672/"
    assert amqp_user_of(url) == "docpipe-ocr"
    assert amqp_user_of("amqp://broker/") == "guest"


# --- the pipeline step, through the in-memory bus ------------------------------------------


def production_bus(user: str) -> MemoryBus:
    settings = Settings(
        env="production",
        amqp_tenants={"upstream-acme": "acme"},
        retry_delays_ms=[10],
    )
    return MemoryBus(settings, "extractor", user=user)


async def test_an_upload_naming_another_tenant_is_refused_recorded_and_never_handled() -> None:
    bus = production_bus("upstream-acme")
    handled: list[DocumentUploaded] = []
    refused: list[tuple[DocumentUploaded, str]] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    async def record(event: DocumentUploaded, reason: str) -> None:
        refused.append((event, reason))

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    bus.on_refused = record
    foreign = upload("globex")
    (settled,) = await bus.deliver(
        InboundMessage(
            foreign.model_dump_json().encode(),
            {"x-event-type": "document.uploaded"},
            "document.uploaded",
            user_id="upstream-acme",
        )
    )
    assert handled == []
    assert refused == [(foreign, "the publisher 'upstream-acme' publishes for tenant 'acme' only")]
    assert (settled.settled, settled.outcome) == ("acked", "dropped")
    assert bus.retries == [] and bus.dead_letters == []

    own = upload("acme")
    await bus.publish(own)  # published as upstream-acme
    assert handled == [own]


async def test_an_upload_without_a_publisher_is_refused_outside_dev() -> None:
    bus = production_bus("upstream-acme")
    handled: list[DocumentUploaded] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    event = upload("acme")
    body, headers = event.model_dump_json().encode(), {"x-event-type": "document.uploaded"}
    (settled,) = await bus.deliver(InboundMessage(body, headers, "document.uploaded"))
    assert handled == [] and settled.outcome == "dropped"


async def test_a_refusal_that_cannot_be_recorded_is_retried_and_checked_again() -> None:
    bus = production_bus("upstream-acme")
    handled: list[DocumentUploaded] = []
    attempts: list[str] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    async def record(event: DocumentUploaded, reason: str) -> None:
        attempts.append(reason)
        if len(attempts) == 1:
            raise ConnectionError("database away")

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    bus.on_refused = record
    await bus.publish(upload("globex"))
    assert len(bus.retries) == 1
    # The retry is republished by the extractor's user: it keeps upstream-acme as publisher.
    retry = bus.retries[0].message
    assert retry.headers[H_PUBLISHED_BY] == "upstream-acme"
    retry.user_id = "docpipe-extractor"  # as RabbitMQ sees the extractor's retry
    await bus.deliver_retries()
    assert handled == [] and len(attempts) == 2


async def test_other_events_and_trusted_publishers_pass() -> None:
    bus = MemoryBus(Settings(env="production", retry_delays_ms=[10]), "extractor")
    handled: list[DocumentUploaded] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    event = upload("anyone")
    await bus.publish(event)  # as ingest, the default user of the in-memory bus
    assert handled == [event]
