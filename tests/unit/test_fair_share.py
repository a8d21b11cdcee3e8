"""The fair-share rules (services/ingest/fair_share.py): limits per tenant, what starts at
once, and the weighted release order."""

from __future__ import annotations

import uuid

import pytest

from services.ingest.errors import PriorityAboveCeiling
from services.ingest.fair_share import (
    TenantLimits,
    TenantLoad,
    release_order,
    releases_by_tenant,
    start_now,
)
from shared import topology
from shared.bus import Delivery, MemoryBus
from shared.bus.identity import PublisherPolicy
from shared.events import DocumentUploaded
from shared.settings import Settings

LIMITS = TenantLimits(inflight_default=4, pending_default=100, ceiling_default=5)


def test_limits_come_from_the_settings_with_per_tenant_overrides() -> None:
    settings = Settings(
        tenant_inflight_default=8,
        tenant_inflight={"big": 50},
        tenant_pending={"big": 5000},
        tenant_weights={"big": 3},
        tenant_priority_ceiling={"ops": 9},
        admission_global_inflight=20,
    )
    limits = TenantLimits.from_settings(settings)
    assert (limits.inflight_of("big"), limits.inflight_of("small")) == (50, 8)
    assert (limits.pending_of("big"), limits.pending_of("small")) == (5000, 10_000)
    assert (limits.weight_of("big"), limits.weight_of("small")) == (3, 1.0)
    assert (limits.ceiling_of("ops"), limits.ceiling_of("small")) == (9, 5)
    assert limits.global_free(15) == 5 and limits.global_free(25) == 0
    assert LIMITS.global_free(10_000) is None


def test_the_per_tenant_map_is_read_from_json_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCPIPE_TENANT_INFLIGHT", '{"t1": 50}')
    assert TenantLimits.from_settings(Settings()).inflight_of("t1") == 50
    monkeypatch.setenv("DOCPIPE_TENANT_INFLIGHT", '{"t1": 0}')
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        Settings()


@pytest.mark.parametrize(
    ("new", "in_flight", "held", "global_free", "starting"),
    [
        (1, 0, 0, None, 1),  # room
        (10, 1, 0, None, 3),  # a batch: up to the limit, the rest held
        (1, 4, 0, None, 0),  # at the limit
        (1, 0, 2, None, 0),  # room, but earlier jobs wait: they go first
        (5, 0, 0, 2, 2),  # the global limit is tighter
        (1, 0, 0, 0, 0),
        (1, 6, 0, None, 0),  # over the limit (it was lowered): none, never negative
    ],
)
def test_start_now(
    new: int, in_flight: int, held: int, global_free: int | None, starting: int
) -> None:
    assert (
        start_now(new, limit=4, in_flight=in_flight, held=held, global_free=global_free) == starting
    )


def test_each_tenant_is_released_up_to_its_own_limit() -> None:
    loads = [TenantLoad("a", in_flight=3, held=500, limit=4), TenantLoad("b", 0, 1, 4)]
    assert releases_by_tenant(release_order(loads, None)) == {"b": 1, "a": 1}
    assert release_order([TenantLoad("a", 4, 500, 4)], None) == []


def test_a_tenant_with_one_job_goes_before_one_with_thousands() -> None:
    loads = [TenantLoad("a", in_flight=9, held=5000, limit=10), TenantLoad("z", 0, 1, 10)]
    assert release_order(loads, global_free=1) == ["z"]


def test_equal_tenants_take_turns_under_a_global_limit() -> None:
    loads = [TenantLoad("a", 0, 5000, 100), TenantLoad("b", 0, 5000, 100)]
    order = release_order(loads, global_free=6)
    assert order == ["a", "b", "a", "b", "a", "b"]


def test_weights_share_the_slots_in_proportion() -> None:
    loads = [
        TenantLoad("gold", 0, 1000, 1000, weight=3),
        TenantLoad("std", 0, 1000, 1000, weight=1),
    ]
    counts = releases_by_tenant(release_order(loads, global_free=400))
    assert counts == {"gold": 300, "std": 100}
    # In any prefix the shares stay within one job of 3:1, so no tenant waits long.
    order = release_order(loads, global_free=40)
    for end in range(1, 41):
        gold = order[:end].count("gold")
        assert abs(gold - 3 * (end - gold)) <= 3


def test_slots_a_tenant_cannot_use_go_to_the_others() -> None:
    loads = [TenantLoad("a", 0, 2, 100), TenantLoad("b", 0, 5000, 100)]
    counts = releases_by_tenant(release_order(loads, global_free=10))
    assert counts == {"a": 2, "b": 8}


def test_what_is_already_in_flight_counts_toward_the_share() -> None:
    loads = [TenantLoad("a", 6, 100, 100), TenantLoad("b", 0, 100, 100)]
    order = release_order(loads, global_free=8)
    assert order[:6] == ["b"] * 6  # b catches up first, then they alternate
    assert sorted(order[6:]) == ["a", "b"]


def test_nothing_is_released_without_a_free_slot() -> None:
    assert release_order([TenantLoad("a", 0, 10, 4)], global_free=0) == []
    assert release_order([], None) == []


def test_a_priority_above_the_ceiling_is_refused_with_a_sentence() -> None:
    from services.ingest.admission import check_priority

    limits = TenantLimits(
        inflight_default=4, pending_default=9, ceiling_default=5, ceilings={"ops": 9}
    )
    check_priority(limits, "t", 5, ("body", "priority"))
    check_priority(limits, "ops", 9, ("body", "priority"))
    with pytest.raises(PriorityAboveCeiling) as refused:
        check_priority(limits, "t", 7, ("body", "priority"))
    [error] = refused.value.errors
    assert error["loc"] == ("body", "priority")
    assert error["msg"] == (
        "Priority 7 is above this tenant's ceiling of 5; use a priority from 0 to 5."
    )


def test_too_many_pending_jobs_is_429_with_retry_after_and_a_sentence() -> None:
    from services.ingest.api.errors import error_response
    from services.ingest.errors import TooManyPendingJobs

    response = error_response(TooManyPendingJobs(200, 30))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert bytes(response.body).decode() == (
        '{"detail":"This tenant already has 200 jobs queued or in progress, its limit; '
        'try again in 30 s, when some have finished."}'
    )


# --- an upstream app's upload on the bus: its priority is capped at its tenant's ceiling ---


def _policy_settings(**extra: object) -> Settings:
    return Settings(
        env="production",
        amqp_tenants={"upstream-acme": "acme", "upstream-ops": "ops"},
        tenant_priority_ceiling={"ops": 8},
        retry_delays_ms=[10],
        **extra,  # type: ignore[arg-type]
    )


def test_an_upstream_priority_is_capped_and_a_trusted_one_kept() -> None:
    policy = PublisherPolicy.from_settings(_policy_settings())
    assert policy.capped_priority("upstream-acme", "acme", 9) == 5
    assert policy.capped_priority("upstream-acme", "acme", 3) == 3
    assert policy.capped_priority("upstream-ops", "ops", 9) == 8
    assert policy.capped_priority("docpipe-ingest", "acme", 9) == 9
    assert policy.capped_priority(None, "acme", 9) == 5  # dev's unknown publishers too


@pytest.mark.parametrize(("user", "handled_priority"), [("upstream-acme", 5), (None, 9)])
async def test_the_handler_sees_the_capped_priority(
    user: str | None, handled_priority: int
) -> None:
    # None: the in-memory bus's default user, ingest (trusted).
    kwargs = {"user": user} if user else {}
    bus = MemoryBus(_policy_settings(), "extractor", **kwargs)
    handled: list[DocumentUploaded] = []

    async def handle(event: DocumentUploaded, delivery: Delivery) -> None:
        handled.append(event)

    bus.subscribe(topology.EXTRACTOR, DocumentUploaded, handle, prefetch=1)
    event = DocumentUploaded(
        job_id=uuid.uuid4(), tenant="acme", document_uri="blob://sha256/" + "a" * 64, priority=9
    )
    await bus.publish(event)
    assert [e.priority for e in handled] == [handled_priority]
    assert handled[0].job_id == event.job_id


def test_a_small_upload_is_published_with_at_least_the_small_job_priority() -> None:
    limits = TenantLimits.from_settings(
        Settings(small_upload_bytes=1000, small_job_priority=5, _env_file=None)
    )
    assert limits.bus_priority(0, 999) == 5  # small: overtakes its tenant's backlog
    assert limits.bus_priority(0, 62) == 6  # a few pages: overtakes the small ones too
    assert limits.bus_priority(7, 999) == 7  # a higher priority asked for is kept
    assert limits.bus_priority(0, 1001) == 0  # large: as asked
    assert limits.bus_priority(0, None) == 0  # size unknown (a URL job): as asked
    off = TenantLimits.from_settings(Settings(small_upload_bytes=0, _env_file=None))
    assert off.bus_priority(0, 10) == 0
