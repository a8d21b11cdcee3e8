"""WebSocket tickets: a browser trades its key (sent in a header) for a short-lived ticket that
opens one WebSocket, so no long-lived key travels in a URL (shared/tickets.py).

POST /v1/jobs/{job_id}/ws-ticket  (read scope)  -> {"ticket", "expires_at", "events"}
     for GET-upgrading /v1/jobs/{job_id}/events?ticket=<ticket>; 404 unknown or another
     tenant's job.
POST /v1/admin/ws-ticket          (admin scope, every tenant) -> the same, for
     /v1/admin/events?ticket=<ticket>.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel

from services.progress.admin.api import ADMIN_EVENTS_SUBJECT
from services.progress.api import visible_job_or_404
from services.progress.batch_api import visible_batch
from services.progress.deps import PoolDep
from shared.auth import AdminDep, Principal, ReadDep, issue_ticket
from shared.settings import Settings, get_settings
from shared.tickets import SubjectKind

router = APIRouter(tags=["tickets"])


class WsTicket(BaseModel):
    ticket: str
    expires_at: datetime
    events: str  # the WebSocket path with the ticket in its query string


def _settings(request: Request) -> Settings:
    settings: Settings | None = getattr(request.app.state, "settings", None)
    return settings or get_settings()


def _ticket(
    request: Request, principal: Principal, kind: SubjectKind, subject: str, path: str
) -> WsTicket:
    ticket, expires_at = issue_ticket(_settings(request), principal, kind, subject)
    return WsTicket(
        ticket=ticket,
        expires_at=datetime.fromtimestamp(expires_at, UTC),
        events=f"{path}?ticket={quote(ticket, safe='')}",
    )


@router.post(
    "/v1/jobs/{job_id}/ws-ticket",
    response_model=WsTicket,
    summary="A short-lived ticket for the job's progress WebSocket",
    responses={404: {"description": "Unknown job, or another tenant's"}},
)
async def job_ws_ticket(
    request: Request, job_id: str, principal: ReadDep, pool: PoolDep
) -> WsTicket:
    await visible_job_or_404(pool, principal, job_id)
    return _ticket(request, principal, SubjectKind.JOB, str(job_id), f"/v1/jobs/{job_id}/events")


@router.post(
    "/v1/batches/{batch_id}/ws-ticket",
    response_model=WsTicket,
    summary="A short-lived ticket for the batch's WebSocket",
    responses={404: {"description": "Unknown batch, or another tenant's"}},
)
async def batch_ws_ticket(
    request: Request, batch_id: str, principal: ReadDep, pool: PoolDep
) -> WsTicket:
    bid = await visible_batch(pool, principal, batch_id)
    if bid is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="No such batch.")
    path = f"/v1/batches/{batch_id}/events"
    return _ticket(request, principal, SubjectKind.BATCH, str(batch_id), path)


@router.post(
    "/v1/admin/ws-ticket",
    response_model=WsTicket,
    summary="A short-lived ticket for the admin event stream",
)
async def admin_ws_ticket(request: Request, principal: AdminDep) -> WsTicket:
    return _ticket(
        request, principal, SubjectKind.ADMIN_EVENTS, ADMIN_EVENTS_SUBJECT, "/v1/admin/events"
    )
