"""The replica feed's pure parts: what travels between progress replicas, how a commit's
updates leave as one message, and what a replica does with another's message."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from pathlib import Path

import pytest

from services.progress import replica_feed
from services.progress.hub import BatchHub, Hub
from services.progress.replica_feed import (
    HELLO,
    HELLO_BACK,
    PEER_SILENT_SECONDS,
    UPDATES,
    Envelope,
    ReplicaFeed,
    decode_envelope,
    deliver,
    encode_envelope,
)
from shared.topology import EXTRACTOR, Topology


def _update(job_id: uuid.UUID, seq: int) -> dict:
    return {"job_id": str(job_id), "seq": seq, "percent": float(seq), "final": False}


def _batch_message(batch_id: uuid.UUID, seq: int) -> dict:
    return {"type": "batch", "batch_id": str(batch_id), "seq": seq}


def test_envelope_round_trip():
    job, batch = uuid.uuid4(), uuid.uuid4()
    envelope = Envelope("abc", [(_update(job, 3), 17.25), (_update(job, 4), None)])
    envelope.batch_messages.append(_batch_message(batch, 9))
    back = decode_envelope(encode_envelope(envelope))
    assert back == envelope


@pytest.mark.parametrize(
    "body",
    [b"not json", b"{}", json.dumps({"v": 99, "origin": "x", "updates": [], "batch": []}).encode()],
)
def test_anything_else_is_refused_with_a_reason(body: bytes):
    with pytest.raises(ValueError, match="live-progress"):
        decode_envelope(body)


def test_deliver_reaches_local_clients_without_sharing_again():
    async def scenario() -> None:
        hub, batch_hub = Hub(), BatchHub()
        shared: list[object] = []
        hub.share = lambda update, at: shared.append(update)
        batch_hub.share = shared.append
        job, batch = uuid.uuid4(), uuid.uuid4()
        job_sub, batch_sub = hub.subscribe(job), batch_hub.subscribe(batch)
        deliver(
            Envelope("other", [(_update(job, 5), None)], [_batch_message(batch, 2)]),
            hub,
            batch_hub,
        )
        assert (await job_sub.get(0.1))["seq"] == 5
        assert (await batch_sub.get(0.1))["seq"] == 2
        assert shared == []  # received updates never go round again

    asyncio.run(scenario())


def test_one_commit_leaves_as_one_message_and_own_messages_are_dropped():
    async def scenario() -> None:
        hub, batch_hub = Hub(), BatchHub()
        feed = ReplicaFeed("amqp://unused/", Topology("t", (200,)), hub, batch_hub)
        feed.connected.set()  # as if on the broker: what is shared is queued for sending
        feed.heard("another-replica")  # and not alone there
        job, batch = uuid.uuid4(), uuid.uuid4()
        sub = hub.subscribe(job)
        hub.publish(job, _update(job, 1))
        hub.publish(job, _update(job, 2))
        batch_hub.publish(_batch_message(batch, 1))
        await asyncio.sleep(0)  # the flush runs on the next turn of the loop
        assert len(feed._outgoing) == 1
        kind, body = feed._outgoing[0]
        assert kind == UPDATES
        sent = decode_envelope(body)
        assert sent.origin == feed.replica_id
        assert [u["seq"] for u, _ in sent.updates] == [1, 2]
        assert [m["seq"] for m in sent.batch_messages] == [1]

        class Raw:
            body = feed._outgoing[0][1]
            app_id = feed.replica_id  # as _serve publishes it
            type = UPDATES

        class Unlabelled(Raw):
            app_id = None  # told by the origin in the body instead

        assert [(await sub.get(0.1))["seq"] for _ in range(2)] == [1, 2]
        await feed.on_message(Raw())  # type: ignore[arg-type]  # its own commit, back
        await feed.on_message(Unlabelled())  # type: ignore[arg-type]
        assert await sub.get(0.01) is None

    asyncio.run(scenario())


def test_nothing_is_queued_while_the_feed_is_not_connected():
    async def scenario() -> None:
        hub = Hub()
        feed = ReplicaFeed("amqp://unused/", Topology("t", (200,)), hub, BatchHub())
        job = uuid.uuid4()
        hub.publish(job, _update(job, 1))
        await asyncio.sleep(0)
        assert len(feed._outgoing) == 0

    asyncio.run(scenario())


class Message:
    """What on_message reads of an incoming AMQP message."""

    def __init__(self, app_id: str | None, kind: str, body: bytes = b"") -> None:
        self.app_id, self.type, self.body = app_id, kind, body


def test_a_replica_alone_shares_nothing_until_another_says_hello(monkeypatch):
    async def scenario() -> None:
        clock = [1000.0]
        monkeypatch.setattr(replica_feed.time, "monotonic", lambda: clock[0])
        hub = Hub()
        feed = ReplicaFeed("amqp://unused/", Topology("t", (200,)), hub, BatchHub())
        feed.connected.set()
        job = uuid.uuid4()
        hub.publish(job, _update(job, 1))
        await asyncio.sleep(0)
        assert list(feed._outgoing) == []  # alone: nothing encoded, nothing sent
        # Another replica connects and says hello: this one answers at once, and shares.
        await feed.on_message(Message("b", HELLO))  # type: ignore[arg-type]
        assert list(feed._outgoing) == [(HELLO_BACK, b"")] and feed.peered.is_set()
        hub.publish(job, _update(job, 2))
        await asyncio.sleep(0)
        assert [kind for kind, _ in feed._outgoing] == [HELLO_BACK, UPDATES]
        # Its periodic hellos are not answered again (it is known), nor are answers.
        await feed.on_message(Message("b", HELLO))  # type: ignore[arg-type]
        await feed.on_message(Message("c", HELLO_BACK))  # type: ignore[arg-type]
        assert len(feed._outgoing) == 2
        # Silent for longer than PEER_SILENT_SECONDS: gone, and sharing stops.
        clock[0] += PEER_SILENT_SECONDS + 1
        hub.publish(job, _update(job, 3))
        await asyncio.sleep(0)
        assert len(feed._outgoing) == 2
        # Back after the silence: a new hello is answered again.
        await feed.on_message(Message("b", HELLO))  # type: ignore[arg-type]
        assert feed._outgoing[-1] == (HELLO_BACK, b"")

    asyncio.run(scenario())


def _progress_permissions() -> dict[str, str]:
    """docpipe-progress's permissions as the compose broker loads them (the file is made by
    scripts/rabbitmq_users.sh --definitions)."""
    definitions = Path(__file__).resolve().parents[2] / "deploy/rabbitmq/definitions.json"
    for entry in json.loads(definitions.read_text())["permissions"]:
        if entry["user"] == "docpipe-progress":
            return {k: entry[k] for k in ("configure", "write", "read")}
    raise AssertionError("no permissions for docpipe-progress")


def test_the_progress_user_may_use_the_live_exchange_and_its_own_queues_only():
    perms = _progress_permissions()
    topo = Topology("docpipe", (200,))
    queue = topo.live_queue_name(ReplicaFeed("amqp://x/", topo, Hub(), BatchHub()).replica_id)

    def may(kind: str, name: str) -> bool:
        return re.search(perms[kind], name) is not None

    # Declare its queue; bind it (write on the queue, read on the exchange); publish; consume.
    assert may("configure", queue) and may("write", queue) and may("read", queue)
    assert may("write", topo.live_exchange_name) and may("read", topo.live_exchange_name)
    # Not declare (or delete) the exchange: the topology's deployment step does.
    assert not may("configure", topo.live_exchange_name)
    assert not may("configure", topo.queue_name(EXTRACTOR))
