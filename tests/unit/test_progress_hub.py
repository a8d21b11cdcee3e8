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


def test_publish_shares_what_this_replica_committed_and_receive_does_not():
    async def scenario() -> None:
        hub = Hub()
        shared: list[tuple[int, float | None]] = []
        hub.share = lambda update, at: shared.append((update["seq"], at))
        job = uuid.uuid4()
        sub = hub.subscribe(job)
        hub.publish(job, _update(job, 1))
        hub.receive(job, _update(job, 2), 1234.5)  # another replica's commit
        assert [(await sub.get(0.1))["seq"] for _ in range(2)] == [1, 2]
        assert shared == [(1, None)]
        assert hub.push_lag(job, 2) is not None  # the other replica's event time is kept

    asyncio.run(scenario())


def test_fleet_stream_drops_updates_older_than_one_it_already_had():
    async def scenario() -> None:
        hub = Hub()
        fleet = hub.subscribe_all()
        a, b = uuid.uuid4(), uuid.uuid4()
        # Two replicas commit a job's updates: the later one may arrive first, or twice.
        for job, seq in ((a, 2), (a, 1), (b, 1), (a, 2), (a, 3)):
            hub.receive(job, _update(job, seq))
        got = []
        while (update := await fleet.get(0.01)) is not None:
            got.append((update["job_id"], update["seq"]))
        assert got == [(str(a), 2), (str(b), 1), (str(a), 3)]

    asyncio.run(scenario())


def test_a_job_stream_still_gets_every_update_whatever_their_order():
    async def scenario() -> None:
        hub = Hub()
        job = uuid.uuid4()
        sub = hub.subscribe(job)
        for seq in (2, 1, 3):  # the stream itself orders and fills gaps (seq_stream.py)
            hub.receive(job, _update(job, seq))
        assert [(await sub.get(0.1))["seq"] for _ in range(3)] == [2, 1, 3]

    asyncio.run(scenario())
