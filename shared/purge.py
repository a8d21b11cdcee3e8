"""Erasing jobs: every row a job owns, in every table, and then the blobs nothing references
any more. Used by ingest's DELETE endpoints and by the progress service's retention sweep.

A purged job leaves only its id in deleted_jobs (a tombstone): a late message of the job (an
upload redelivered to the extractor, a page still queued) is dropped on it instead of
re-creating the job (shared.jobs.ensure_job, require_active; progress's window).

Blobs are content-addressed, so two jobs (of one tenant or of two) can share one: a blob file is
deleted only once no job names it as its document (jobs.document_uri), no job references it
as an image (job_blobs) and no tenant still owns it (blob_owners). An upload records its job
under a shared advisory lock on the blob (blob_lock), and the deletion checks and unlinks
under the exclusive one, so a blob is never removed under a job that is being created.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import TypeAlias

import asyncpg
import structlog

from shared.blobstore import SCHEME, Blobs

log = structlog.get_logger(__name__)

Db: TypeAlias = asyncpg.Connection | asyncpg.Pool

# Tables whose rows belong to one job through a job_id column; they are found in the catalogue,
# so a table added later is covered without a change here. jobs goes last (its foreign keys
# cascade anyway); deleted_jobs is the tombstone itself.
_NOT_OWNED = frozenset({"jobs", "deleted_jobs"})
_JOB_TABLES = """
SELECT c.table_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = current_schema() AND c.column_name = 'job_id'
  AND t.table_type = 'BASE TABLE'
ORDER BY c.table_name
"""


async def job_tables(conn: Db) -> list[str]:
    """Every table with a job_id column, except jobs and the tombstones."""
    rows = await conn.fetch(_JOB_TABLES)
    return [r["table_name"] for r in rows if r["table_name"] not in _NOT_OWNED]


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def purge_jobs(conn: asyncpg.Connection, job_ids: Sequence[uuid.UUID]) -> list[str]:
    """Erase the jobs' rows (in the caller's transaction, on rows the caller locked) and leave
    a tombstone per job. Returns the blob URIs the jobs referenced: pass them to
    delete_unreferenced_blobs after commit."""
    ids = sorted(set(job_ids))
    if not ids:
        return []
    uris = await conn.fetch(
        "SELECT document_uri AS uri FROM jobs WHERE job_id = ANY($1::uuid[]) "
        "UNION SELECT blob_uri FROM job_blobs WHERE job_id = ANY($1::uuid[])",
        ids,
    )
    owners = await conn.fetch(
        "SELECT DISTINCT document_uri, tenant FROM jobs WHERE job_id = ANY($1::uuid[])", ids
    )
    await conn.execute(
        "INSERT INTO deleted_jobs (job_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", ids
    )
    for table in await job_tables(conn):
        await conn.execute(f"DELETE FROM {_quoted(table)} WHERE job_id = ANY($1::uuid[])", ids)
    await conn.execute(
        "DELETE FROM outbox WHERE payload->>'job_id' = ANY($1::text[])", [str(j) for j in ids]
    )
    await conn.execute(
        "DELETE FROM llm_budgets WHERE scope = ANY($1::text[])", [f"job:{j}" for j in ids]
    )
    await conn.execute("DELETE FROM jobs WHERE job_id = ANY($1::uuid[])", ids)
    # A tenant owns a blob while one of its jobs uses it.
    await conn.executemany(
        "DELETE FROM blob_owners o WHERE o.blob_uri = $1 AND o.tenant = $2 AND NOT EXISTS "
        "(SELECT 1 FROM jobs j WHERE j.document_uri = $1 AND j.tenant = $2)",
        [(r["document_uri"], r["tenant"]) for r in owners],
    )
    return sorted({r["uri"] for r in uris if r["uri"].startswith(SCHEME)})


def blob_lock_key(uri: str) -> str:
    return f"docpipe-blob:{uri}"


async def blob_lock(conn: asyncpg.Connection, uri: str, *, shared: bool = True) -> None:
    """Hold the blob's advisory lock until the transaction ends: shared while a job naming it
    is created, exclusive while it is deleted."""
    lock = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    await conn.execute(f"SELECT {lock}(hashtextextended($1, 0))", blob_lock_key(uri))


_REFERENCED = """
SELECT EXISTS (SELECT 1 FROM jobs WHERE document_uri = $1)
    OR EXISTS (SELECT 1 FROM job_blobs WHERE blob_uri = $1)
    OR EXISTS (SELECT 1 FROM blob_owners WHERE blob_uri = $1)
"""


async def delete_unreferenced_blobs(
    pool: asyncpg.Pool, blobs: Blobs, uris: Sequence[str], *, min_age_seconds: float = 0.0
) -> list[str]:
    """Delete the files of the blobs no job references any more; returns the URIs deleted.
    `min_age_seconds`: leave a file written more recently than that (a writer that has not
    recorded its reference yet, e.g. an image the extractor just rendered)."""
    deleted: list[str] = []
    for uri in uris:
        async with pool.acquire() as conn, conn.transaction():
            await blob_lock(conn, uri, shared=False)
            if await conn.fetchval(_REFERENCED, uri):
                continue
            try:
                removed = await asyncio.to_thread(
                    blobs.delete, uri, min_age_seconds=min_age_seconds
                )
            except ValueError as exc:
                # A malformed URI names no file of ours: one such row must not stop the sweep.
                log.warning("blob_uri_malformed", uri=uri, error=str(exc))
                continue
            if removed:
                deleted.append(uri)
    return deleted
