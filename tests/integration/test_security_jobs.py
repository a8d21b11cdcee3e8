"""Against the real PostgreSQL: a bus upload may reuse a job id only as a redelivery of that
job's own upload, and a blob belongs to the tenants that uploaded it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from structlog.testing import capture_logs

from services.ingest.fair_share import TenantLimits
from services.ingest.repository import NewJob, create_job
from shared.errors import JobGone
from shared.events import DocumentUploaded
from shared.jobs import (
    ForeignJobMessage,
    blob_owner_check,
    ensure_job,
    owns_blob,
    record_blob_owner,
)
from shared.settings import Settings

pytestmark = pytest.mark.integration

BLOB = "blob://sha256/" + "5e" * 32


def upload(job_id: uuid.UUID, tenant: str = "acme", uri: str = BLOB) -> DocumentUploaded:
    return DocumentUploaded(job_id=job_id, tenant=tenant, document_uri=uri, filename="a.pdf")


async def job_row(pool: asyncpg.Pool, job_id: uuid.UUID) -> tuple[str, str, str | None]:
    row = await pool.fetchrow(
        "SELECT tenant, document_uri, filename FROM jobs WHERE job_id = $1", job_id
    )
    assert row is not None
    return row["tenant"], row["document_uri"], row["filename"]


async def refusals(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[tuple[str, str, str]]:
    rows = await pool.fetch(
        "SELECT claimed_tenant, claimed_document_uri, routing_key FROM refused_messages "
        "WHERE job_id = $1 ORDER BY id",
        job_id,
    )
    return [(r["claimed_tenant"], r["claimed_document_uri"], r["routing_key"]) for r in rows]


async def test_a_redelivered_upload_is_accepted(db_pool: asyncpg.Pool) -> None:
    event = upload(uuid.uuid4())
    await ensure_job(db_pool, event)
    await ensure_job(db_pool, event)  # the same message again: no error, one row
    assert await job_row(db_pool, event.job_id) == ("acme", BLOB, "a.pdf")
    assert await refusals(db_pool, event.job_id) == []


@pytest.mark.parametrize(
    ("tenant", "uri"),
    [
        ("mallory", BLOB),  # another tenant claims the running job
        ("acme", "file:///etc/passwd"),  # the same tenant, another document
        ("mallory", "blob://sha256/" + "66" * 32),
    ],
)
async def test_a_message_claiming_another_job_is_refused_and_recorded(
    db_pool: asyncpg.Pool, tenant: str, uri: str
) -> None:
    job_id = uuid.uuid4()
    await ensure_job(db_pool, upload(job_id))
    intruder = upload(job_id, tenant=tenant, uri=uri)
    with capture_logs() as logs, pytest.raises(ForeignJobMessage) as refused:
        await ensure_job(db_pool, intruder)
    assert isinstance(refused.value, JobGone)  # the bus drops it: no retry, no dead letter
    assert await job_row(db_pool, job_id) == ("acme", BLOB, "a.pdf")  # nothing reached it
    assert await refusals(db_pool, job_id) == [(tenant, uri, "document.uploaded")]
    (warning,) = [entry for entry in logs if entry["event"] == "bus message refused"]
    assert warning["log_level"] == "warning"
    assert warning["job_id"] == str(job_id) and warning["claimed_tenant"] == tenant


async def test_a_refusal_inside_a_transaction_leaves_the_job_untouched(
    db_pool: asyncpg.Pool,
) -> None:
    """The progress service calls ensure_job inside its transaction: the refusal propagates
    (its record goes with the rolled-back transaction; the extractor's call keeps one)."""
    job_id = uuid.uuid4()
    await ensure_job(db_pool, upload(job_id))
    async with db_pool.acquire() as conn:
        with pytest.raises(ForeignJobMessage):
            async with conn.transaction():
                await ensure_job(conn, upload(job_id, tenant="mallory"))
    assert await job_row(db_pool, job_id) == ("acme", BLOB, "a.pdf")


async def test_blob_owners(db_pool: asyncpg.Pool) -> None:
    uri = "blob://sha256/" + uuid.uuid4().hex * 2
    assert not await owns_blob(db_pool, "acme", uri)
    await record_blob_owner(db_pool, "acme", uri)
    await record_blob_owner(db_pool, "acme", uri)  # idempotent
    await record_blob_owner(db_pool, "globex", uri)  # the same bytes, uploaded by another
    check = blob_owner_check(db_pool)
    assert await check("acme", uri) and await check("globex", uri)
    assert not await check("mallory", uri)
    assert not await check("acme", "blob://sha256/" + "77" * 32)


async def test_an_upload_through_ingest_records_its_owner(db_pool: asyncpg.Pool) -> None:
    uri = "blob://sha256/" + uuid.uuid4().hex * 2
    event = DocumentUploaded(job_id=uuid.uuid4(), tenant="acme", document_uri=uri)
    async with db_pool.acquire() as conn:
        limits = TenantLimits.from_settings(Settings())
        await create_job(conn, NewJob(event, uri[-64:], "pdf", None), {}, limits)
    assert await owns_blob(db_pool, "acme", uri)
    assert not await owns_blob(db_pool, "other", uri)
