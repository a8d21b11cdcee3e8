"""Fair shares between tenants, as pure rules (docs/decisions/1080): each tenant's limits, how
many of a new submission may start at once, and the order in which held jobs are released.

The release order is weighted least-share-first: the next job goes to the tenant whose jobs in
flight, counting those released in this pass, are the smallest share of its weight. It is
deficit round robin with the deficit read from the database (jobs in flight) rather than kept
in memory, so every replica computes the same turn from the same rows and a restart loses
nothing. A tenant with 5,000 held jobs and one with a single job take turns: the single job
goes first, as its tenant has nothing in flight.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.settings import Settings
from shared.topology import MAX_PRIORITY


@dataclass(frozen=True)
class TenantLimits:
    """Each tenant's limits: the defaults, and the overrides the settings name."""

    inflight_default: int
    pending_default: int
    ceiling_default: int
    inflight: Mapping[str, int] = field(default_factory=dict)
    pending: Mapping[str, int] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)
    ceilings: Mapping[str, int] = field(default_factory=dict)
    global_inflight: int = 0  # 0: no limit over all tenants together
    small_upload_bytes: int = 0  # 0: uploads keep the priority they asked for
    small_upload_priority: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> TenantLimits:
        return cls(
            inflight_default=settings.tenant_inflight_default,
            pending_default=settings.tenant_pending_default,
            ceiling_default=settings.priority_ceiling_default,
            inflight=dict(settings.tenant_inflight),
            pending=dict(settings.tenant_pending),
            weights=dict(settings.tenant_weights),
            ceilings=dict(settings.tenant_priority_ceiling),
            global_inflight=settings.admission_global_inflight,
            small_upload_bytes=settings.small_upload_bytes,
            small_upload_priority=settings.small_job_priority,
        )

    def bus_priority(self, priority: int, size_bytes: int | None) -> int:
        """The priority an upload is published and released with: a small document's is at
        least the small-job priority, so it overtakes a backlog (the job keeps the one asked)."""
        if size_bytes is None or size_bytes <= 0:
            return priority
        # A few pages (a sixteenth of the threshold) go one above: a one-page letter should
        # overtake a report of a few hundred kilobytes too.
        if size_bytes <= self.small_upload_bytes // 16:
            return max(priority, min(self.small_upload_priority + 1, MAX_PRIORITY))
        if size_bytes <= self.small_upload_bytes:
            return max(priority, self.small_upload_priority)
        return priority

    def inflight_of(self, tenant: str) -> int:
        return self.inflight.get(tenant, self.inflight_default)

    def pending_of(self, tenant: str) -> int:
        return self.pending.get(tenant, self.pending_default)

    def weight_of(self, tenant: str) -> float:
        return self.weights.get(tenant, 1.0)

    def ceiling_of(self, tenant: str) -> int:
        return self.ceilings.get(tenant, self.ceiling_default)

    def global_free(self, all_in_flight: int) -> int | None:
        """Free slots over all tenants; None when there is no global limit."""
        if self.global_inflight == 0:
            return None
        return max(0, self.global_inflight - all_in_flight)


def start_now(new: int, *, limit: int, in_flight: int, held: int, global_free: int | None) -> int:
    """How many of a tenant's `new` jobs may be published at once; the rest are held. None
    start while the tenant already has jobs held: they were first (a tenant's jobs start in
    its own order)."""
    if held > 0:
        return 0
    room = limit - in_flight
    if global_free is not None:
        room = min(room, global_free)
    return max(0, min(new, room))


@dataclass(frozen=True)
class TenantLoad:
    """What the release pass reads of one tenant with held jobs."""

    tenant: str
    in_flight: int
    held: int
    limit: int
    weight: float = 1.0


def release_order(loads: Sequence[TenantLoad], global_free: int | None) -> list[str]:
    """The tenants whose held jobs to release now, one entry per job, in turn order: each
    tenant up to its own limit, all together up to `global_free` (None: no global limit)."""
    # Heap key: the share the tenant would have after one more job; ties by tenant name, so
    # every replica computes the same order.
    turns: list[tuple[float, str]] = []
    room: dict[str, int] = {}
    count: dict[str, int] = {}
    weights: dict[str, float] = {}
    for load in loads:
        room[load.tenant] = min(load.held, load.limit - load.in_flight)
        count[load.tenant] = load.in_flight
        weights[load.tenant] = load.weight
        if room[load.tenant] > 0:
            heapq.heappush(turns, ((load.in_flight + 1) / load.weight, load.tenant))
    order: list[str] = []
    budget = global_free
    while turns and (budget is None or budget > 0):
        _, tenant = heapq.heappop(turns)
        order.append(tenant)
        room[tenant] -= 1
        count[tenant] += 1
        if budget is not None:
            budget -= 1
        if room[tenant] > 0:
            heapq.heappush(turns, ((count[tenant] + 1) / weights[tenant], tenant))
    return order


def releases_by_tenant(order: Sequence[str]) -> dict[str, int]:
    """How many jobs each tenant gets released in a pass (its next ones, in its own order)."""
    counts: dict[str, int] = {}
    for tenant in order:
        counts[tenant] = counts.get(tenant, 0) + 1
    return counts
