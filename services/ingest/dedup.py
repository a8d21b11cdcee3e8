"""Duplicate documents: a submission whose tenant, content hash and processing options match
another job's reuses that job's work instead of being processed again.

- The source has completed: the new job gets a job.deduplicated event instead of a
  document.uploaded; the progress service copies the source's result and completes it at once
  (nothing reaches the extractor, so it costs nothing).
- The source is still running (identical submissions that arrive together): the new job is a
  follower; it waits, queued, and progress completes it with the same result when the source
  completes. A source that fails fails its followers with the source's reason; one that is
  cancelled or deleted fails them with a sentence saying so (a follower never processes the
  document itself).
- A submission with a password is never a duplicate nor a source: the password is not
  stored, so the key cannot tell one password from another, and reusing a result would hand
  the decrypted text to whoever sends any password.
- `force=true` processes the document again (and makes that job a new source).

Identical submissions are serialised by an advisory lock on (tenant, dedup key) inside the
transaction that creates the job, so of two that arrive together exactly one becomes the
source.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import BaseModel

from services.ingest import repository as repo
from services.ingest.admission import admit
from services.ingest.errors import UploadRejected
from services.ingest.fair_share import TenantLimits
from services.ingest.outbox import enqueue
from shared.blobstore import Blobs
from shared.events import JobDeduplicated
from shared.jobs import record_blob_owner
from shared.purge import blob_lock

# Options that do not change what processing produces: two submissions differing only in
# these share a result. Every other option (OCR mode, analysis options...) is part of the key.
NOT_PROCESSING_OPTIONS = frozenset(
    {"priority", "password", "force", "keep_images", "callback_url", "labels", "name"}
)


def dedup_key(
    sha256: str, options: BaseModel, analysis: dict[str, Any] | None = None
) -> str | None:
    """A digest of the content hash and the options that shape the result (the analysis
    options among them); None (never deduplicated) when a password is given."""
    if getattr(options, "password", None) is not None:
        return None
    fields: dict[str, Any] = options.model_dump(mode="json", exclude=set(NOT_PROCESSING_OPTIONS))
    fields["password"] = False  # keeps the keys of jobs recorded before passwords were excluded
    if fields.get("ocr_lang") is None:  # the deployment's languages: keys as before ocr_lang
        fields.pop("ocr_lang", None)
    if not fields.get("docx_comments"):  # comments left out: keys as before docx_comments
        fields.pop("docx_comments", None)
    if fields.get("pdf_tables") is None:  # the deployment's choice: keys as before pdf_tables
        fields.pop("pdf_tables", None)
    if analysis is not None:
        fields["analysis"] = analysis
    canonical = json.dumps({"sha256": sha256, "options": fields}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


_FIND_SOURCE = """
SELECT job_id, status FROM jobs
WHERE tenant = $1 AND dedup_key = $2
  AND (status = 'completed'
       OR (status IN ('queued', 'processing') AND deduplicated_from IS NULL
           AND cancel_requested_at IS NULL))
ORDER BY status = 'completed' DESC, created_at
LIMIT 1
"""


async def find_source(conn: asyncpg.Connection, tenant: str, key: str) -> uuid.UUID | None:
    """A completed job with the same key, else a running source (not itself a follower)."""
    row = await conn.fetchrow(_FIND_SOURCE, tenant, key)
    return row["job_id"] if row is not None else None


async def lock_key(conn: asyncpg.Connection, tenant: str, key: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"docpipe-dedup:{tenant}:{key}"
    )


@dataclass(frozen=True)
class Created:
    outbox_id: int | None
    deduplicated_from: uuid.UUID | None


async def create_job_or_reuse(
    conn: asyncpg.Connection,
    job: repo.NewJob,
    headers: dict[str, Any],
    *,
    force: bool,
    blobs: Blobs,
    limits: TenantLimits,
) -> Created:
    """Record the job in one transaction: as a duplicate of a matching job (with its
    job.deduplicated event), or, with `force` or without a match, as a new job to process
    (with its document.uploaded, held if the tenant is at its in-flight limit). Raises
    asyncpg.UniqueViolationError when the idempotency key is taken."""
    ev = job.event
    async with conn.transaction():
        # A blob is never deleted while a job naming it is being created (shared.purge).
        await blob_lock(conn, ev.document_uri)
        if not await asyncio.to_thread(blobs.exists, ev.document_uri):
            raise UploadRejected("The upload was removed while it was being stored; send it again.")
        source = None
        if job.dedup_key is not None:
            await lock_key(conn, ev.tenant, job.dedup_key)
            source = None if force else await find_source(conn, ev.tenant, job.dedup_key)
        await repo.insert_job(conn, job, deduplicated_from=source)
        await record_blob_owner(conn, ev.tenant, ev.document_uri)
        if source is None:
            priority = limits.bus_priority(ev.priority, ev.size_bytes)
            outbox_id = await enqueue(conn, ev, priority=priority, headers=headers)
            await admit(conn, limits, ev.tenant, [outbox_id] if outbox_id is not None else [])
        else:
            reuse = JobDeduplicated(job_id=ev.job_id, source_job_id=source)
            outbox_id = await enqueue(conn, reuse, priority=ev.priority, headers=headers)
    return Created(outbox_id, source)
