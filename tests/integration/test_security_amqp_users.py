"""Issue 10, item 1 ("a bus that knows who published"), against the real broker and the
running services: each service's RabbitMQ user reaches only its own queues, an upstream user
publishes document.uploaded and nothing else, the broker refuses a forged user_id, and an
upload naming another tenant than its publisher's is refused, recorded, and makes no job.

The users come from scripts/rabbitmq_users.sh (run by scripts/ensure_services.sh)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aio_pika
import aiormq
import asyncpg
import pytest
from aio_pika.abc import AbstractChannel

from shared.bus import Bus
from shared.bus.identity import dev_password, service_user, url_with_user
from shared.bus.publisher import declare_topology_at
from shared.events import DocumentUploaded, PageExtracted
from shared.settings import Settings
from shared.topology import ANALYZER, EXTRACTOR, OCR, Topology
from tests.conftest import ROOT, unavailable
from tests.integration.stack_client import StackClient, upstream_settings

pytestmark = pytest.mark.integration

USERS_SCRIPT = ROOT / "scripts" / "rabbitmq_users.sh"


async def ignore(message: object) -> None:
    pass


def as_user(settings: Settings, user: str) -> str:
    return url_with_user(settings.amqp_url, user, dev_password(user))


async def refused_as(
    url: str, attempt: Callable[[AbstractChannel], Awaitable[object]]
) -> aiormq.exceptions.AMQPError:
    """Run `attempt` on a fresh channel of `url`; the broker's refusal it ends with."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(aiormq.exceptions.AMQPError) as refused:
            await attempt(channel)
            await asyncio.sleep(0.3)  # an asynchronous channel close lands meanwhile
            await channel.declare_queue("", exclusive=True, passive=False)
        return refused.value
    finally:
        await connection.close()


@pytest.fixture
async def topology(test_settings: Settings, rabbit_available: None) -> Topology:
    topo = Topology.from_settings(test_settings)
    await declare_topology_at(test_settings.amqp_url, topo)
    return topo


@pytest.fixture
async def upstream_topic_limits(topology: Topology) -> AsyncIterator[None]:
    """The topic permissions of the run's private exchange (production's "docpipe" gets them
    from scripts/rabbitmq_users.sh itself)."""
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is needed to set topic permissions")
    name = topology.exchange_name
    await asyncio.to_thread(
        subprocess.run, ["bash", str(USERS_SCRIPT), "--topic-only", name], check=True
    )
    yield
    await asyncio.to_thread(
        subprocess.run, ["bash", str(USERS_SCRIPT), "--clear-topic", name], check=True
    )


async def test_a_service_user_reaches_only_its_own_queues(
    test_settings: Settings, topology: Topology
) -> None:
    extractor = as_user(test_settings, service_user("extractor"))

    async def consume_ocr_queue(channel: AbstractChannel) -> None:
        queue = await channel.declare_queue(topology.queue_name(OCR), passive=True)
        await queue.consume(ignore)

    refusal = await refused_as(extractor, consume_ocr_queue)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal

    async def declare_an_exchange(channel: AbstractChannel) -> None:
        await channel.declare_exchange(f"{topology.prefix}.mine", aio_pika.ExchangeType.FANOUT)

    refusal = await refused_as(extractor, declare_an_exchange)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal

    async def delete_the_exchange(channel: AbstractChannel) -> None:
        await channel.exchange_delete(topology.exchange_name)

    refusal = await refused_as(extractor, delete_the_exchange)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal

    # Its own queue it may declare and consume.
    connection = await aio_pika.connect(extractor)
    try:
        channel = await connection.channel()
        work = topology.work_queue(EXTRACTOR)
        queue = await channel.declare_queue(work.name, durable=True, arguments=work.arguments)
        tag = await queue.consume(ignore)
        await queue.cancel(tag)
    finally:
        await connection.close()


async def test_an_upstream_user_publishes_only_uploads_and_reads_nothing(
    test_settings: Settings, topology: Topology, upstream_topic_limits: None
) -> None:
    upstream = as_user(test_settings, "upstream-dev")
    page = PageExtracted(job_id=uuid.uuid4(), page=1, text="forged")

    async def publish_a_page(channel: AbstractChannel) -> None:
        exchange = await channel.get_exchange(topology.exchange_name, ensure=False)
        body = aio_pika.Message(page.model_dump_json().encode(), user_id="upstream-dev")
        await exchange.publish(body, routing_key=page.routing_key)

    refusal = await refused_as(upstream, publish_a_page)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal
    assert "page.extracted" in str(refusal)

    async def into_a_queue(channel: AbstractChannel) -> None:
        body = aio_pika.Message(page.model_dump_json().encode(), user_id="upstream-dev")
        await channel.default_exchange.publish(body, routing_key=topology.queue_name(ANALYZER))

    refusal = await refused_as(upstream, into_a_queue)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal

    async def read_a_queue(channel: AbstractChannel) -> None:
        queue = await channel.declare_queue(topology.dlq_name(EXTRACTOR), passive=True)
        await queue.get(no_ack=True, fail=False)

    refusal = await refused_as(upstream, read_a_queue)
    assert isinstance(refusal, aiormq.exceptions.ChannelAccessRefused), refusal

    # An upload it may publish.
    bus = Bus(upstream_settings(test_settings, "upstream-dev"), "upstream-app")
    await bus.connect()
    try:
        event = DocumentUploaded(job_id=uuid.uuid4(), tenant="dev", document_uri="file:///x")
        await bus.publish(event)  # confirmed; nothing consumes this private topology's queue
    finally:
        await bus.stop()


async def test_the_broker_refuses_a_forged_user_id(
    test_settings: Settings, topology: Topology
) -> None:
    async def pose_as_ingest(channel: AbstractChannel) -> None:
        exchange = await channel.get_exchange(topology.exchange_name, ensure=False)
        upload = DocumentUploaded(job_id=uuid.uuid4(), tenant="other", document_uri="file:///x")
        body = aio_pika.Message(upload.model_dump_json().encode(), user_id="docpipe-ingest")
        await exchange.publish(body, routing_key=upload.routing_key)

    refusal = await refused_as(as_user(test_settings, "upstream-dev"), pose_as_ingest)
    assert isinstance(refusal, aiormq.exceptions.ChannelPreconditionFailed), refusal
    assert "user_id property set to 'docpipe-ingest'" in str(refusal)


async def test_an_upload_naming_another_tenant_is_refused_and_makes_no_job(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    document = tmp_path / "theirs.txt"
    document.write_text("Published for a tenant that is not the publisher's.\n")
    tenants = test_settings.tenants_by_key
    other_tenant = tenants[stack.other_key]
    assert test_settings.amqp_tenants["upstream-dev"] != other_tenant
    forged = DocumentUploaded(
        job_id=uuid.uuid4(), tenant=other_tenant, document_uri=document.as_uri()
    )
    bus = Bus(upstream_settings(test_settings, "upstream-dev"), "upstream-app")
    await bus.connect()
    try:
        await bus.publish(forged)
    finally:
        await bus.stop()

    deadline = time.monotonic() + 30
    while not (
        refused := await db_pool.fetch(
            "SELECT claimed_tenant, reason FROM refused_messages WHERE job_id = $1",
            forged.job_id,
        )
    ):
        assert time.monotonic() < deadline, "the refusal was not recorded"
        await asyncio.sleep(0.2)
    assert [tuple(row) for row in refused] == [
        (other_tenant, "the publisher 'upstream-dev' publishes for tenant 'dev' only")
    ]
    # Both consumers of uploads (extractor, progress) dropped it: no job, for anyone.
    await asyncio.sleep(1.0)
    assert await db_pool.fetchval("SELECT count(*) FROM jobs WHERE job_id = $1", forged.job_id) == 0
    assert (await stack.job(str(forged.job_id), key=stack.other_key)).status_code == 404


async def test_the_services_publish_as_their_own_users(
    stack: StackClient, test_settings: Settings, tmp_path: Path
) -> None:
    """The stack runs each service as its own RabbitMQ user: the user_id of what each one
    publishes says so (and the broker checked it)."""
    keys = ("document.uploaded", "extraction.started", "chunks.analyzed", "job.completed")
    seen: dict[str, set[str | None]] = {key: set() for key in keys}

    async def note(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        seen[message.routing_key or ""].add(message.user_id)

    connection = await aio_pika.connect(test_settings.amqp_url)  # the tests' admin
    try:
        channel = await connection.channel()
        tap = await channel.declare_queue("", exclusive=True, auto_delete=True)
        for key in keys:
            await tap.bind(Topology.from_settings(test_settings).exchange_name, routing_key=key)
        await tap.consume(note, no_ack=True)
        document = tmp_path / "whose.txt"
        document.write_text("Each service publishes under its own name.\n")
        job_id = await stack.submit_ok(document)
        assert (await stack.wait(job_id))["status"] == "completed"
        deadline = time.monotonic() + 10
        while not all(seen.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    assert seen == {
        "document.uploaded": {"docpipe-ingest"},
        "extraction.started": {"docpipe-extractor"},
        "chunks.analyzed": {"docpipe-analyzer"},
        "job.completed": {"docpipe-progress"},
    }
