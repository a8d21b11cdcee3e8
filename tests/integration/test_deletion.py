"""DELETE /v1/jobs/{id}: every row of the job in every table and every blob only it used are
gone, nothing of the jobs sharing its blobs is touched, the job answers 404 everywhere, and a
late message of a deleted job re-creates nothing. Real PostgreSQL, RabbitMQ and services."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from services.progress.dead_letter_recorder import DeadLetter, record_dead_letter
from shared.blobstore import BlobStore
from shared.events import DocumentUploaded
from shared.purge import job_tables
from shared.settings import Settings
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient, publish_as_upstream

pytestmark = pytest.mark.integration


async def rows_of(pool: asyncpg.Pool, job_id: str) -> dict[str, int]:
    """The job's rows in every table that names a job, and in the outbox and budgets."""
    counts = {}
    for table in [*await job_tables(pool), "jobs"]:
        counts[table] = await pool.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE job_id = $1', uuid.UUID(job_id)
        )
    counts["outbox"] = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE payload->>'job_id' = $1", job_id
    )
    counts["llm_budgets"] = await pool.fetchval(
        "SELECT count(*) FROM llm_budgets WHERE scope = $1", f"job:{job_id}"
    )
    return counts


async def blobs_of(pool: asyncpg.Pool, job_id: str) -> set[str]:
    rows = await pool.fetch(
        "SELECT document_uri AS uri FROM jobs WHERE job_id = $1 "
        "UNION SELECT blob_uri FROM job_blobs WHERE job_id = $1",
        uuid.UUID(job_id),
    )
    return {r["uri"] for r in rows}


def files_in(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")}


async def status_of(stack: StackClient, path: str, key: str, method: str = "GET") -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.request(method, path, headers=stack.headers(key))
    return response.status_code


def scanned_pdf(path: Path, pages: int, label: str) -> bytes:
    images = [
        text_image([f"{label} page {n}", "scanned for the deletion test"]) for n in range(pages)
    ]
    return pdf_with_pages(path, images).read_bytes()


async def test_delete_erases_the_job_and_spares_jobs_sharing_its_blobs(
    stack: StackClient, db_pool: asyncpg.Pool, test_settings: Settings, tmp_path: Path
) -> None:
    data = scanned_pdf(tmp_path / "shared.pdf", 2, f"shared {uuid.uuid4()}")
    # Three jobs on the same bytes: two of one tenant (the second forced, so it is processed
    # again and renders the same page images), one of another tenant.
    a = (await stack.post_job(data, keep_images="true"))["job_id"]
    await stack.wait_ended(a)
    b = (await stack.post_job(data, keep_images="true", force="true"))["job_id"]
    c = (await stack.post_job(data, key=stack.other_key, keep_images="true"))["job_id"]
    for job, key in ((b, None), (c, stack.other_key)):
        assert (await stack.wait_ended(job, key))["status"] == "completed"
    shared_blobs = await blobs_of(db_pool, a)
    assert shared_blobs == await blobs_of(db_pool, b) == await blobs_of(db_pool, c)
    assert len(shared_blobs) >= 3  # the upload and two rendered pages
    before_a = await rows_of(db_pool, a)
    assert before_a["jobs"] == 1 and before_a["job_pages"] == 2 and before_a["job_updates"] > 1
    before_b, before_c = await rows_of(db_pool, b), await rows_of(db_pool, c)
    blob_root = Path(test_settings.blob_dir)
    files_before = files_in(blob_root)

    # Another tenant cannot delete it (nor learn that it exists).
    assert await status_of(stack, f"{stack.api}/v1/jobs/{a}", stack.other_key, "DELETE") == 404
    assert await status_of(stack, f"{stack.api}/v1/jobs/{a}", stack.key, "DELETE") == 204

    assert not any((await rows_of(db_pool, a)).values()), await rows_of(db_pool, a)
    assert await rows_of(db_pool, b) == before_b
    assert await rows_of(db_pool, c) == before_c
    assert files_in(blob_root) == files_before  # every blob of A is still used by B and C
    for key in (stack.key, stack.other_key, stack.admin_key):
        for path in (
            f"{stack.api}/v1/jobs/{a}",
            f"{stack.api}/v1/jobs/{a}/result",
            f"{stack.stack.url('progress')}/v1/jobs/{a}/progress",
        ):
            assert await status_of(stack, path, key) == 404, (path, key)
        assert await status_of(stack, f"{stack.api}/v1/jobs/{a}", key, "DELETE") == 404

    # Once the last jobs using them go, so do the blobs and their owners.
    assert await status_of(stack, f"{stack.api}/v1/jobs/{b}", stack.key, "DELETE") == 204
    assert files_in(blob_root) == files_before  # C still uses them
    assert await status_of(stack, f"{stack.api}/v1/jobs/{c}", stack.admin_key, "DELETE") == 204
    store = BlobStore(blob_root)
    gone = {store.path_for(store.digest_of(uri)) for uri in shared_blobs}
    assert files_in(blob_root) == files_before - gone
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM blob_owners WHERE blob_uri = ANY($1::text[])", list(shared_blobs)
    )
    for job in (b, c):
        assert not any((await rows_of(db_pool, job)).values())


async def ocred_pages(pool: asyncpg.Pool, job_id: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM job_pages WHERE job_id = $1 AND ocred_at IS NOT NULL",
        uuid.UUID(job_id),
    )
    return count


async def test_deleting_a_running_job_cancels_it_and_late_messages_recreate_nothing(
    stack: StackClient, db_pool: asyncpg.Pool, test_settings: Settings, tmp_path: Path
) -> None:
    data = scanned_pdf(tmp_path / "long.pdf", 10, f"running {uuid.uuid4()}")
    created = await stack.post_job(data)
    job_id = created["job_id"]
    async with asyncio.timeout(120):
        while await ocred_pages(db_pool, job_id) < 1:
            await asyncio.sleep(0.05)
    row = await db_pool.fetchrow(
        "SELECT tenant, document_uri FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
    )
    document_uri = row["document_uri"]
    assert await status_of(stack, f"{stack.api}/v1/jobs/{job_id}", stack.key, "DELETE") == 204

    # An upstream app publishes the job's upload again, as a redelivery would.
    await publish_as_upstream(
        test_settings,
        DocumentUploaded(
            job_id=uuid.UUID(job_id),
            tenant=row["tenant"],
            document_uri=document_uri,
            filename="scan.pdf",
        ),
    )
    # The job's work in flight (pages queued for OCR and analysis, the upload redelivered,
    # their retries) drains within the retry delays (200, 500, 1000 ms); nothing of the job
    # may appear meanwhile, and nothing after.
    deadline = time.monotonic() + 6.0
    while time.monotonic() < deadline:
        rows = await rows_of(db_pool, job_id)
        assert not any(rows.values()), rows
        await asyncio.sleep(0.2)
    assert not BlobStore(test_settings.blob_dir).exists(document_uri)
    assert await db_pool.fetchval(
        "SELECT count(*) FROM deleted_jobs WHERE job_id = $1", uuid.UUID(job_id)
    )


async def test_a_dead_letter_of_a_deleted_job_is_not_recorded(db_pool: asyncpg.Pool) -> None:
    deleted, live = uuid.uuid4(), uuid.uuid4()
    await db_pool.execute("INSERT INTO deleted_jobs (job_id) VALUES ($1)", deleted)

    def letter(job_id: uuid.UUID) -> DeadLetter:
        return DeadLetter(
            message_id=str(uuid.uuid4()), dedupe_key=str(uuid.uuid4()), replay_token="",
            queue="test.ocr", routing_key="images.extracted", reason="retries-exhausted",
            error="boom", attempts=3, job_id=job_id, payload={"job_id": str(job_id)},
            body=b"{}", headers={},
        )  # fmt: skip

    assert await record_dead_letter(db_pool, letter(deleted)) is None
    assert await record_dead_letter(db_pool, letter(live)) is not None
    count = await db_pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE job_id = ANY($1::uuid[])", [deleted, live]
    )
    assert count == 1
    await db_pool.execute("DELETE FROM dead_letters WHERE job_id = $1", live)
