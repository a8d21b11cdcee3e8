"""Retention: the progress service's background sweep that keeps storage bounded.

Each round, in short transactions of at most `retention_batch` rows (FOR UPDATE SKIP LOCKED,
so a job being written is simply left for the next round):
- with DOCPIPE_RETENTION_DAYS set, finished jobs older than that are purged like a DELETE
  (shared.purge: every row, then the blobs nothing references any more), and batches left
  without jobs go too;
- page images are released once their OCR is recorded (or their job ended), unless the job
  asked keep_images; a file goes once no job references it (blobs are shared by content);
- sent outbox rows, the updates of finished jobs except their final one, and old tombstones
  of deleted jobs are trimmed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

from services.progress.lifecycle import utcnow
from services.progress.store import retention as retention_store
from shared.blobstore import Blobs
from shared.purge import delete_unreferenced_blobs, purge_jobs
from shared.service import ServiceContext
from shared.settings import Settings

log = structlog.get_logger(__name__)

# Batches per kind and round: a backlog drains over several rounds, never in one long burst.
MAX_BATCHES_PER_ROUND = 20


@dataclass
class SweepReport:
    jobs_purged: int = 0
    batches_deleted: int = 0
    images_released: int = 0
    blobs_deleted: int = 0
    outbox_trimmed: int = 0
    jobs_updates_trimmed: int = 0
    tombstones_trimmed: int = 0


async def _in_batches(
    pool: asyncpg.Pool, step: Callable[[asyncpg.Connection], Awaitable[int]], batch: int
) -> int:
    """Run `step` in transactions of its own until it does less than a full batch."""
    total = 0
    for _ in range(MAX_BATCHES_PER_ROUND):
        async with pool.acquire() as conn, conn.transaction():
            done = await step(conn)
        total += done
        if done < batch:
            break
    return total


async def purge_expired(
    pool: asyncpg.Pool, blobs: Blobs, before: datetime, batch: int, report: SweepReport
) -> None:
    uris: set[str] = set()

    async def step(conn: asyncpg.Connection) -> int:
        job_ids = await retention_store.lock_expired_jobs(conn, before, batch)
        uris.update(await purge_jobs(conn, job_ids))
        return len(job_ids)

    report.jobs_purged += await _in_batches(pool, step, batch)

    async def batches(conn: asyncpg.Connection) -> int:
        return await retention_store.delete_empty_batches(conn, before, batch)

    report.batches_deleted += await _in_batches(pool, batches, batch)
    report.blobs_deleted += len(await delete_unreferenced_blobs(pool, blobs, sorted(uris)))


async def release_images(
    pool: asyncpg.Pool, blobs: Blobs, keep_seconds: float, now: datetime, batch: int,
    report: SweepReport,
) -> None:  # fmt: skip
    uris: set[str] = set()

    async def step(conn: asyncpg.Connection) -> int:
        released = await retention_store.release_ocred_images(
            conn, now - timedelta(seconds=keep_seconds), batch
        )
        uris.update(released)
        return len(released)

    report.images_released += await _in_batches(pool, step, batch)
    # A file rewritten lately belongs to a job whose reference may not be recorded yet.
    deleted = await delete_unreferenced_blobs(
        pool, blobs, sorted(uris), min_age_seconds=keep_seconds
    )
    report.blobs_deleted += len(deleted)


async def trim(pool: asyncpg.Pool, settings: Settings, now: datetime, report: SweepReport) -> None:
    batch = settings.retention_batch
    outbox_before = now - timedelta(seconds=settings.outbox_keep_seconds)
    updates_before = now - timedelta(seconds=settings.job_updates_keep_seconds)
    tombstones_before = now - timedelta(days=settings.deleted_jobs_keep_days)

    async def outbox(conn: asyncpg.Connection) -> int:
        return await retention_store.trim_outbox(conn, outbox_before, batch * 10)

    async def updates(conn: asyncpg.Connection) -> int:
        return await retention_store.trim_job_updates(conn, updates_before, batch)

    async def tombstones(conn: asyncpg.Connection) -> int:
        return await retention_store.trim_deleted_jobs(conn, tombstones_before, batch * 10)

    report.outbox_trimmed += await _in_batches(pool, outbox, batch * 10)
    report.jobs_updates_trimmed += await _in_batches(pool, updates, batch)
    report.tombstones_trimmed += await _in_batches(pool, tombstones, batch * 10)


async def sweep_once(
    pool: asyncpg.Pool, blobs: Blobs, settings: Settings, now: datetime | None = None
) -> SweepReport:
    """One round of every retention rule."""
    now = now or utcnow()
    report = SweepReport()
    if settings.retention_days is not None:
        before = now - timedelta(days=settings.retention_days)
        await purge_expired(pool, blobs, before, settings.retention_batch, report)
    await release_images(
        pool, blobs, settings.image_keep_seconds, now, settings.retention_batch, report
    )
    await trim(pool, settings, now, report)
    return report


async def retention_loop(ctx: ServiceContext) -> None:
    while True:
        try:
            report = await sweep_once(ctx.pool, ctx.blobs, ctx.settings)
            if any(vars(report).values()):
                log.info("retention sweep", **vars(report))
        except asyncio.CancelledError:
            raise
        except Exception:  # keep sweeping; the next round retries
            log.exception("retention sweep failed")
        await asyncio.sleep(ctx.settings.retention_check_seconds)
