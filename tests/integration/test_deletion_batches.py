"""DELETE /v1/batches/{id}: the batch row, its updates and every job in it (with all they
own) are erased; another tenant's batch answers 404. The batch and its jobs' batch_id are
written here as ingest's batch endpoint writes them (migration 010)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.purge import job_tables
from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def delete(stack: StackClient, batch_id: uuid.UUID, key: str) -> int:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.delete(
            f"{stack.api}/v1/batches/{batch_id}", headers=stack.headers(key)
        )
    return response.status_code


async def test_delete_batch_erases_the_batch_and_its_jobs(
    stack: StackClient, db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    texts = [f"batch {uuid.uuid4()}\npage one"]
    jobs = [
        await stack.submit_ok(pdf_with_pages(tmp_path / f"{n}.pdf", [f"{texts[0]} {n}"]))
        for n in range(2)
    ]
    tenant = await db_pool.fetchval("SELECT tenant FROM jobs WHERE job_id = $1", uuid.UUID(jobs[0]))
    batch_id = uuid.uuid4()
    # The batch's seq counts the batch_updates row written below, as progress keeps it: with
    # seq 0, progress's next batch message (seq 1) collides with that row, the jobs' updates
    # never commit and their messages cycle through the shared stack's retry queues.
    await db_pool.execute(
        "INSERT INTO batches (batch_id, tenant, name, seq) VALUES ($1, $2, 'to delete', 1)",
        batch_id,
        tenant,
    )
    await db_pool.execute(
        "INSERT INTO batch_updates (batch_id, seq, snapshot) VALUES ($1, 1, '{}'::jsonb)", batch_id
    )
    await db_pool.execute(
        "UPDATE jobs SET batch_id = $1 WHERE job_id = ANY($2::uuid[])",
        batch_id,
        [uuid.UUID(j) for j in jobs],
    )
    for job in jobs:
        assert (await stack.wait(job))["status"] == "completed", job

    assert await delete(stack, batch_id, stack.other_key) == 404
    assert await delete(stack, batch_id, stack.key) == 204
    assert await delete(stack, batch_id, stack.key) == 404

    for table in ("batches", "batch_updates"):
        assert not await db_pool.fetchval(
            f"SELECT count(*) FROM {table} WHERE batch_id = $1", batch_id
        )
    for job in jobs:
        assert (await stack.job(job)).status_code == 404
        for table in [*await job_tables(db_pool), "jobs"]:
            count = await db_pool.fetchval(
                f'SELECT count(*) FROM "{table}" WHERE job_id = $1', uuid.UUID(job)
            )
            assert count == 0, (table, job)
