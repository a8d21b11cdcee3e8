"""Webhook deliveries over HTTP.

GET  /v1/jobs/{job_id}/webhooks -> {"items": [delivery]}: the job's deliveries, oldest
     first, each with every attempt (status code, latency, error). 404 for an unknown job or
     another tenant's (admins see every tenant's).
GET  /v1/batches/{batch_id}/webhooks -> the same for a batch's batch.completed.
POST /v1/admin/webhooks/{delivery_id}/redeliver -> 202: queue one delivery again now, with a
     fresh retry schedule and the same webhook-id. Admin keys only; 404 unknown delivery.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, status
from pydantic import BaseModel, Field

from services.progress.api import visible_job_or_404
from services.progress.deps import PoolDep
from services.progress.store import webhooks as webhook_store
from services.progress.webhooks.delivery import webhook_id
from shared.auth import AdminDep, ReadDep, may_see

router = APIRouter(tags=["webhooks"])


class WebhookAttempt(BaseModel):
    attempt: int
    started_at: datetime
    status_code: int | None = Field(description="The receiver's answer; none if none came.")
    latency_ms: float
    error: str | None = Field(description="Why the attempt failed, as a sentence.")


class WebhookDelivery(BaseModel):
    delivery_id: uuid.UUID
    webhook_id: str = Field(description="The webhook-id header: the same at every attempt.")
    event_type: str = Field(
        description="job.completed, job.failed, job.cancelled or batch.completed"
    )
    url: str
    status: str = Field(description="pending, delivered or failed (given up)")
    attempts: int
    next_attempt_at: datetime | None = Field(description="When a pending one is tried next.")
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    history: list[WebhookAttempt]


class WebhookDeliveryList(BaseModel):
    items: list[WebhookDelivery]


class Redelivery(BaseModel):
    delivery_id: uuid.UUID
    status: str


@router.get(
    "/v1/jobs/{job_id}/webhooks",
    summary="A job's webhook deliveries and their attempts",
    response_model=WebhookDeliveryList,
)
async def job_webhooks(job_id: str, principal: ReadDep, pool: PoolDep) -> WebhookDeliveryList:
    jid = await visible_job_or_404(pool, principal, job_id)
    rows = await webhook_store.deliveries_of_job(pool, jid)
    return WebhookDeliveryList(items=[delivery_view(row) for row in rows])


def delivery_view(row: dict[str, Any]) -> WebhookDelivery:
    pending = row["status"] == "pending"
    return WebhookDelivery.model_validate(
        {
            **row,
            "webhook_id": webhook_id(row["delivery_id"]),
            "next_attempt_at": row["next_attempt_at"] if pending else None,
        }
    )


@router.get(
    "/v1/batches/{batch_id}/webhooks",
    summary="A batch's own webhook deliveries (batch.completed) and their attempts",
    response_model=WebhookDeliveryList,
)
async def batch_webhooks(
    batch_id: uuid.UUID, principal: ReadDep, pool: PoolDep
) -> WebhookDeliveryList:
    tenant = await webhook_store.batch_tenant(pool, batch_id)
    if tenant is None or not may_see(principal, tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such batch.")
    rows = await webhook_store.deliveries_of_batch(pool, batch_id)
    return WebhookDeliveryList(items=[delivery_view(row) for row in rows])


@router.post(
    "/v1/admin/webhooks/{delivery_id}/redeliver",
    summary="Send a webhook delivery again (admin)",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Redelivery,
)
async def redeliver(delivery_id: uuid.UUID, _admin: AdminDep, pool: PoolDep) -> Redelivery:
    row = await webhook_store.redeliver(pool, delivery_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such webhook delivery.")
    return Redelivery(delivery_id=row["delivery_id"], status=row["status"])
