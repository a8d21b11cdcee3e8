"""The audit trail, read-only (shared/audit.py writes it).

GET /v1/admin/audit?action=&limit=&before=
    {"items": [{id, at, actor, tenant, action, target, detail}], "next_before": int | null}
    newest first. An admin key limited to one tenant sees only the entries about that tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.progress.deps import PoolDep
from shared import audit
from shared.auth import TenantAdminDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get("/audit", summary="What admins did: who, what, when, on what")
async def audit_trail(
    principal: TenantAdminDep,
    pool: PoolDep,
    action: Annotated[audit.Action | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=audit.LIST_MAX)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> dict[str, Any]:
    items = await audit.entries(
        pool,
        tenant=principal.tenant,
        all_tenants=principal.all_tenants,
        limit=limit,
        before_id=before,
        action=None if action is None else action.value,
    )
    next_before = items[-1]["id"] if len(items) == limit else None
    return {"items": items, "next_before": next_before}
