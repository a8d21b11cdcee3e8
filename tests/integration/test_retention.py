"""Retention against the real stack's database and blob store: the sweep (run here directly,
as the runtime role the progress service connects as, with keep times of zero) releases page
images once their OCR is recorded unless the job asked to keep them, never deletes an image
another job still references, purges jobs past DOCPIPE_RETENTION_DAYS like a DELETE, and trims
sent outbox rows and finished jobs' updates down to the final one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.progress.retention import sweep_once
from shared.blobstore import BlobStore
from shared.purge import job_tables
from shared.settings import Settings
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def submit(stack: StackClient, data: bytes, **form: str) -> str:
    return str((await stack.post_job(data, **form))["job_id"])


async def wait_completed(stack: StackClient, job_id: str) -> dict[str, Any]:
    body = await stack.wait_ended(job_id)
    assert body["status"] == "completed", body
    return body


async def image_uris(pool: asyncpg.Pool, job_id: str) -> set[str]:
    rows = await pool.fetch("SELECT blob_uri FROM job_blobs WHERE job_id = $1", uuid.UUID(job_id))
    return {r["blob_uri"] for r in rows}


def sweep_settings(settings: Settings, **changes: Any) -> Settings:
    keep_nothing = {
        "image_keep_seconds": 0.0,
        "outbox_keep_seconds": 0.0,
        "job_updates_keep_seconds": 0.0,
    }
    return settings.model_copy(update={**keep_nothing, **changes})


def scan(path: Path, label: str) -> bytes:
    pages = [text_image([f"{label} page {n}", "a scan for the retention test"]) for n in (1, 2)]
    return pdf_with_pages(path, pages).read_bytes()


async def test_images_go_after_ocr_unless_kept_or_shared(
    stack: StackClient,
    db_pool: asyncpg.Pool,
    runtime_pool: asyncpg.Pool,
    test_settings: Settings,
    tmp_path: Path,
) -> None:
    blobs = BlobStore(test_settings.blob_dir)
    shared_scan = scan(tmp_path / "shared.pdf", f"shared {uuid.uuid4()}")
    dropping = await submit(stack, shared_scan)
    await wait_completed(stack, dropping)
    keeping = await submit(stack, shared_scan, force="true", keep_images="true")
    alone = await submit(stack, scan(tmp_path / "alone.pdf", f"alone {uuid.uuid4()}"))
    for job in (keeping, alone):
        await wait_completed(stack, job)
    shared_images = await image_uris(db_pool, dropping)
    alone_images = await image_uris(db_pool, alone)
    assert len(shared_images) == 2 and shared_images == await image_uris(db_pool, keeping)
    assert len(alone_images) == 2 and all(blobs.exists(u) for u in shared_images | alone_images)

    await sweep_once(runtime_pool, blobs, sweep_settings(test_settings))

    assert await image_uris(db_pool, dropping) == set()
    assert await image_uris(db_pool, alone) == set()
    assert await image_uris(db_pool, keeping) == shared_images  # it asked to keep them
    assert all(blobs.exists(u) for u in shared_images)  # still referenced by `keeping`
    assert not any(blobs.exists(u) for u in alone_images)
    # The results do not need the images.
    assert (await stack.result(dropping)).json()["text"]


async def test_expired_jobs_are_purged_and_trims_keep_the_final_update(
    stack: StackClient,
    db_pool: asyncpg.Pool,
    runtime_pool: asyncpg.Pool,
    test_settings: Settings,
    tmp_path: Path,
) -> None:
    blobs = BlobStore(test_settings.blob_dir)
    texts = [f"retention {uuid.uuid4()}\npage {n}" for n in (1, 2)]
    old = await submit(stack, pdf_with_pages(tmp_path / "old.pdf", texts).read_bytes())
    recent = await submit(stack, pdf_with_pages(tmp_path / "recent.pdf", texts).read_bytes())
    for job in (old, recent):
        await wait_completed(stack, job)
    old_uri = await db_pool.fetchval(
        "SELECT document_uri FROM jobs WHERE job_id = $1", uuid.UUID(old)
    )
    await db_pool.execute(
        "UPDATE jobs SET finished_at = now() - interval '10 days' WHERE job_id = $1",
        uuid.UUID(old),
    )
    updates = await db_pool.fetchval(
        "SELECT count(*) FROM job_updates WHERE job_id = $1", uuid.UUID(recent)
    )
    assert updates > 1

    report = await sweep_once(runtime_pool, blobs, sweep_settings(test_settings, retention_days=5))

    assert report.jobs_purged >= 1
    for table in [*await job_tables(db_pool), "jobs"]:
        count = await db_pool.fetchval(
            f'SELECT count(*) FROM "{table}" WHERE job_id = $1', uuid.UUID(old)
        )
        assert count == 0, table
    assert not blobs.exists(old_uri)
    assert (await stack.job(old)).status_code == 404
    # The recent job is kept, with only its final update; its sent outbox rows are gone.
    assert (await stack.job(recent)).json()["status"] == "completed"
    final = await db_pool.fetch(
        "SELECT payload FROM job_updates WHERE job_id = $1", uuid.UUID(recent)
    )
    assert len(final) == 1 and final[0]["payload"]["final"] is True
    assert (await stack.watch(recent, after=0))[-1]["status"] == "completed"
    assert not await db_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE payload->>'job_id' = $1 AND published_at IS NOT NULL",
        recent,
    )
