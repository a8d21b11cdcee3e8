"""Issue 10, item 5, against the running services: a document password is sealed on the bus and
rests nowhere, in clear or sealed (no table, no dead letter, no log line); a token the keys
cannot open fails its job with a sentence; a password sent in clear on the bus is refused
without being kept; ingest and the extractor refuse to start without a key outside dev."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aio_pika.abc import AbstractIncomingMessage
from cryptography.fernet import Fernet

from scripts.stack import stack_ports
from shared.events import DocumentUploaded, JobFailed, derive_id
from shared.secret_box import NO_SECRET_KEYS, UNREADABLE_PASSWORD, SecretBox, secret_box
from shared.settings import Settings
from tests.integration.stack_client import StackClient, publish_as_upstream
from tests.integration.test_ingest_api import bus_tap
from tests.integration.test_reliability_dead_letters import publish_raw
from tests.stack_fixture import refused_start
from tests.unit.extractor_fixtures import encrypted_pdf, text_pdf
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

TEXT = "Quarterly figures behind a password."


def locked_pdf(folder: Path, password: str) -> Path:
    return encrypted_pdf(folder / "locked.pdf", text_pdf(folder / "plain.pdf", [TEXT]), password)


def tenant_of(stack: StackClient, settings: Settings) -> str:
    return settings.tenants_by_key[stack.key]


def carries(message: AbstractIncomingMessage, secret: str) -> bool:
    return secret.encode() in message.body or secret in repr(message.headers)


async def tables_holding(pool: asyncpg.Pool, secret: str) -> list[str]:
    """Every table of the database with a row whose text (bytea as hex) contains `secret`."""
    tables = await pool.fetch(
        "SELECT quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public'"
    )
    found = []
    for table in tables:
        hit = await pool.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {table['name']} t WHERE strpos(t::text, $1) > 0 "
            "OR strpos(t::text, encode(convert_to($1, 'UTF8'), 'hex')) > 0)",
            secret,
        )
        if hit:
            found.append(table["name"])
    return found


def logs_holding(stack: StackClient, secret: str) -> list[str]:
    folder = stack.stack.log_dir
    assert folder is not None
    return [p.name for p in folder.glob("*.log") if secret in p.read_text(errors="replace")]


async def wait_ended_as_tenant(stack: StackClient, job_id: uuid.UUID) -> dict[str, Any]:
    """The job's final view; a bus job shows up in the API only once progress has its row."""
    async with asyncio.timeout(180):
        while True:
            response = await stack.job(str(job_id))
            if response.status_code == 200 and response.json()["status"] in (
                "completed",
                "failed",
                "cancelled",
            ):
                body: dict[str, Any] = response.json()
                return body
            await asyncio.sleep(0.2)


async def test_a_password_travels_sealed_and_rests_nowhere(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    pdf = locked_pdf(tmp_path, password)
    async with bus_tap(test_settings, "#") as tap:
        job_id = await stack.submit_ok(pdf, password=password)
        final = await stack.wait(job_id)
        assert final["status"] == "completed", final
        await tap.wait_for(
            lambda: any(
                m.routing_key == "job.completed" and job_id.encode() in m.body for m in tap.messages
            ),
            timeout=30,
        )
    assert TEXT in (await stack.result(job_id)).json()["text"]

    # On the bus: the upload carries a token the configured key opens; no message, body or
    # headers, carries the password.
    [upload] = [
        m
        for m in tap.messages
        if m.routing_key == "document.uploaded" and job_id.encode() in m.body
    ]
    event = DocumentUploaded.model_validate_json(upload.body)
    assert event.password_token is not None
    assert secret_box(test_settings).open(event.password_token) == password
    assert len(tap.messages) > 3
    assert [m.routing_key for m in tap.messages if carries(m, password)] == []

    # At rest: the outbox row lost even the token once it was published; no table holds
    # either; no service logged either.
    outbox = await db_pool.fetchrow(
        "SELECT payload, published_at FROM outbox WHERE message_id = $1",
        str(derive_id(job_id, "document.uploaded")),
    )
    assert outbox["published_at"] is not None
    assert "password_token" not in outbox["payload"]
    assert await tables_holding(db_pool, TEXT) != []  # the search finds what is there
    assert await tables_holding(db_pool, password) == []
    assert await tables_holding(db_pool, event.password_token) == []
    assert logs_holding(stack, password) == []
    assert logs_holding(stack, event.password_token) == []


async def test_an_upstream_app_seals_with_the_shared_key_and_another_key_fails_the_job(
    stack: StackClient, test_settings: Settings, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    pdf = locked_pdf(tmp_path, password)
    tenant = tenant_of(stack, test_settings)
    # As the README tells an upstream publisher: Fernet with the deployment's key.
    key = test_settings.secret_keys[0].get_secret_value()
    sealed = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=pdf.as_uri(),
        password_token=Fernet(key).encrypt(password.encode()).decode(),
    )
    foreign = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=pdf.as_uri(),
        password_token=SecretBox([Fernet.generate_key().decode()]).seal(password),
    )
    await publish_as_upstream(test_settings, sealed)
    await publish_as_upstream(test_settings, foreign)
    assert (await wait_ended_as_tenant(stack, sealed.job_id))["status"] == "completed"
    assert TEXT in (await stack.result(str(sealed.job_id))).json()["text"]
    failed = await wait_ended_as_tenant(stack, foreign.job_id)
    assert failed["status"] == "failed"
    assert failed["error"] == UNREADABLE_PASSWORD


async def test_a_password_sent_in_clear_on_the_bus_is_refused_and_kept_nowhere(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    pdf = locked_pdf(tmp_path, password)
    job_id = uuid.uuid4()
    body = json.dumps(
        {
            "job_id": str(job_id),
            "tenant": tenant_of(stack, test_settings),
            "document_uri": pdf.as_uri(),
            "password": password,  # the contract before passwords were sealed
        }
    ).encode()
    message_id = f"clear-password-{job_id}"
    async with bus_tap(test_settings, "#") as tap:
        await publish_raw(test_settings, "document.uploaded", body, message_id)
        # The extractor and progress both read document.uploaded: each fails the job.
        await tap.wait_for(
            lambda: sum(m.routing_key == "job.failed" for m in tap.messages) >= 2, timeout=60
        )
    for message in tap.messages:
        if message.message_id == message_id:
            continue  # what the test itself published
        assert not carries(message, password), message.routing_key
    reasons = {
        JobFailed.model_validate_json(m.body).reason
        for m in tap.messages
        if m.routing_key == "job.failed"
    }
    assert reasons == {
        "The message for this job could not be read: password: Extra inputs are not permitted."
    }

    async def both_recorded() -> bool:
        count = await db_pool.fetchval(
            "SELECT count(*) FROM dead_letters WHERE job_id = $1", job_id
        )
        return bool(count == 2)

    await wait_until(both_recorded, timeout=60, every=0.2, what="two dead letters")
    letters = await db_pool.fetch(
        "SELECT body, payload, headers::text AS headers, error FROM dead_letters WHERE job_id = $1",
        job_id,
    )
    for letter in letters:
        assert password.encode() not in bytes(letter["body"])
        assert "password" not in letter["payload"]
        assert password not in letter["headers"] and password not in letter["error"]
        assert letter["error"].startswith("ValidationError: password: Extra inputs")
    assert await tables_holding(db_pool, password) == []
    assert logs_holding(stack, password) == []


@pytest.mark.parametrize(
    ("service", "secret_keys", "sentence"),
    [
        ("ingest", "", NO_SECRET_KEYS),
        ("extractor", "", NO_SECRET_KEYS),
        ("extractor", "not-a-fernet-key", "Key 1 of DOCPIPE_SECRET_KEYS is not a Fernet key"),
    ],
)
async def test_a_service_without_a_secret_key_refuses_to_start_outside_dev(
    service: str,
    secret_keys: str,
    sentence: str,
    test_settings: Settings,
    db_pool: asyncpg.Pool,
    rabbit_available: None,
) -> None:
    env: dict[str, Any] = {
        **os.environ,
        **stack_ports(),
        "DOCPIPE_ENV": "production",
        "DOCPIPE_API_KEYS": "prod-key=prod",  # past the API key check: this one is the test
        "DOCPIPE_ADMIN_KEYS": "",
        "DOCPIPE_SECRET_KEYS": secret_keys,
        "DOCPIPE_DATABASE_URL": test_settings.database_url,
        "DOCPIPE_AMQP_URL": test_settings.amqp_url,
        "DOCPIPE_BUS_PREFIX": test_settings.bus_prefix + "_nosecret",
        "DOCPIPE_BLOB_DIR": str(test_settings.blob_dir),
    }
    text = await refused_start(service, env)
    assert sentence in text
    if secret_keys:
        assert secret_keys not in text  # a bad key is named by its position only
