"""The hub's fan-out: per-job delivery, overflow drops, one serialisation per update."""

from __future__ import annotations

import asyncio
import json
import uuid

from services.progress.hub import Hub


def _update(job_id: uuid.UUID, seq: int) -> dict:
    return {"job_id": str(job_id), "seq": seq, "percent": float(seq), "final": False}


def test_publish_reaches_only_that_jobs_subscribers_and_the_fleet():
    async def scenario() -> None:
        hub = Hub()
        a, b = uuid.uuid4(), uuid.uuid4()
        subs_a = [hub.subscribe(a) for _ in range(3)]
        sub_b = hub.subscribe(b)
        fleet = hub.subscribe_all()
        hub.publish(a, _update(a, 1))
        for sub in subs_a:
            assert await sub.get(0.1) == _update(a, 1)
        assert await sub_b.get(0.01) is None
        assert (await fleet.get(0.1))["job_id"] == str(a)
        subs_a[0].close()
        assert hub.subscribers(a) == 2

    asyncio.run(scenario())


def test_slow_subscriber_is_dropped_not_waited_for():
    async def scenario() -> None:
        hub = Hub(queue_size=2)
        job = uuid.uuid4()
        slow, fast = hub.subscribe(job), hub.subscribe(job)
        for seq in range(1, 4):
            hub.publish(job, _update(job, seq))
            if seq < 3:
                assert await fast.get(0.1) == _update(job, seq)
        assert slow.overflowed and hub.subscribers(job) == 1
        assert await fast.get(0.1) == _update(job, 3)

    asyncio.run(scenario())


def test_encode_serialises_each_update_once():
    hub = Hub()
    job = uuid.uuid4()
    update = _update(job, 7)
    first = hub.encode(update)
    assert json.loads(first) == update
    assert hub.encode(dict(update)) is first
