"""Admin-only: every tenant's batches with their aggregates, for the admin page's batch list.

GET /v1/admin/batches?status=&limit=
    {"items": [batch], "limit"}: newest first. status: a batch status, or active (queued +
    processing). Each batch carries its name, tenant, creation time and its aggregate (the
    fields of shared.events.BatchSnapshot).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.progress.batches import Aggregate, batch_message
from services.progress.deps import PoolDep
from services.progress.store import batches as batch_store
from shared.auth import AdminDep
from shared.events import JobStatus
from shared.snapshots import BatchSnapshot

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class BatchFilter(StrEnum):
    """A batch status, or active (queued or processing)."""

    QUEUED = JobStatus.QUEUED.value
    PROCESSING = JobStatus.PROCESSING.value
    COMPLETED = JobStatus.COMPLETED.value
    FAILED = JobStatus.FAILED.value
    CANCELLED = JobStatus.CANCELLED.value
    ACTIVE = "active"


class AdminBatch(BatchSnapshot):
    """A batch as the admin listing shows it: its aggregate, and who and what it is."""

    tenant: str
    name: str | None
    created_at: datetime
    finished_at: datetime | None


class AdminBatchList(BaseModel):
    items: list[AdminBatch]
    limit: int


def batch_item(row: asyncpg.Record) -> dict[str, Any]:
    message = batch_message(row["batch_id"], row["seq"], Aggregate.of(row), row["updated_at"])
    return {
        **message,
        "tenant": row["tenant"],
        "name": row["name"],
        "created_at": row["created_at"].isoformat(),
        "finished_at": row["finished_at"].isoformat() if row["finished_at"] else None,
    }


@router.get(
    "/batches",
    summary="Every tenant's batches, newest first, with their aggregates",
    response_model=None,
    responses={200: {"model": AdminBatchList, "description": "The batches."}},
)
async def admin_batches(
    _: AdminDep,
    pool: PoolDep,
    status_filter: Annotated[BatchFilter | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    rows = await batch_store.admin_batches(pool, status_filter, limit)
    return {"items": [batch_item(r) for r in rows], "limit": limit}
