"""Live progress across progress replicas.

Every replica publishes what it commits (job snapshots, batch stream messages) to the fanout
exchange `<prefix>.progress.live`, and reads what the others commit from an exclusive,
auto-deleted queue of its own bound to it, into its hub (`Hub.receive`). So a WebSocket client
gets every update of its job whichever replica applied it, about one broker hop later than
the replica that applied it.

Its own updates are short-circuited: the hub hands them to its own clients at once, and they
come back from the exchange only to be dropped by their origin (a fanout queue gets every
message, and RabbitMQ has no no-local consume). The updates of one commit travel as one
message, sent on the next turn of the event loop after the commit's updates were pushed.

A replica alone shares nothing: the replicas say hello on the exchange when they connect and
every PRESENCE_SECONDS, a replica answers a hello from one it had not heard, and a replica
encodes and sends its commits only while it has heard another within PEER_SILENT_SECONDS.
(A fanout that only echoes a lone replica's commits back to it is work for nothing, on the
replica and on the broker; decision 1070 has what it measured.) Updates committed before a new
replica's hello arrives reach that replica's clients from job_updates, as below.

Best effort, by design: messages are transient, unconfirmed, consumed without acks, and a
replica's queue keeps them a few seconds at most. Anything lost on the way (a broker restart,
a replica that is paused) is still in job_updates and batch_updates: a job stream whose next
seq is missing reads the gap from there at once (seq_stream.py), and without any live message
it looks there every POLL_SECONDS anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import cast

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from prometheus_client import Counter

from services.progress.arithmetic import Snapshot
from services.progress.batches import StreamMessage
from services.progress.hub import BatchHub, Hub
from shared.bus.identity import amqp_user_of
from shared.bus.publisher import RECONNECT_SECONDS
from shared.topology import Topology

log = structlog.get_logger(__name__)

FORMAT_VERSION = 1
# Commits waiting to be sent while the broker is slow or away: past this, the oldest go (the
# other replicas' clients read them from the database instead).
OUTGOING_KEPT = 2048
# How long a replica waits before connecting again after the feed failed.
RETRY_SECONDS = 5.0
# How often a replica says it is there, and how long a silent one still counts as there.
PRESENCE_SECONDS = 5.0
PEER_SILENT_SECONDS = 3 * PRESENCE_SECONDS
# The AMQP `type` of the messages on the live exchange.
HELLO = "hello"  # a replica is there (at connect and every PRESENCE_SECONDS)
HELLO_BACK = "hello-back"  # the answer to a hello from a replica not heard before
UPDATES = "updates"  # one commit's updates (an Envelope)

REPLICA_MESSAGES = Counter(
    "docpipe_progress_replica_messages",
    "Live-progress messages between progress replicas: sent, received from another replica, "
    "dropped before sending (broker away or too slow)",
    ["outcome"],
)


@dataclass
class Envelope:
    """One commit's updates, as they travel between replicas."""

    origin: str
    # (snapshot, when the event behind it occurred in epoch seconds, if known)
    updates: list[tuple[Snapshot, float | None]] = field(default_factory=list)
    batch_messages: list[StreamMessage] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updates or self.batch_messages)


def encode_envelope(envelope: Envelope) -> bytes:
    return json.dumps(
        {
            "v": FORMAT_VERSION,
            "origin": envelope.origin,
            "updates": [[update, at] for update, at in envelope.updates],
            "batch": envelope.batch_messages,
        },
        separators=(",", ":"),
    ).encode()


def decode_envelope(body: bytes) -> Envelope:
    """The envelope in `body`; ValueError for anything else (another version included)."""
    try:
        raw = json.loads(body)
        if raw["v"] != FORMAT_VERSION:
            raise ValueError(f"live-progress format {raw['v']!r}, not {FORMAT_VERSION}")
        updates = [
            (cast(Snapshot, u), None if at is None else float(at)) for u, at in raw["updates"]
        ]
        return Envelope(str(raw["origin"]), updates, cast(list[StreamMessage], raw["batch"]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a live-progress message: {exc!r}") from exc


def deliver(envelope: Envelope, hub: Hub, batch_hub: BatchHub) -> None:
    """Another replica's commit, to this replica's clients."""
    for update, at in envelope.updates:
        hub.receive(uuid.UUID(update["job_id"]), update, at)
    for message in envelope.batch_messages:
        batch_hub.receive(message)


class ReplicaFeed:
    """Connects a replica's hubs to the live exchange: what they publish is sent, what the
    other replicas sent is received into them. `run()` keeps it connected."""

    def __init__(self, amqp_url: str, topology: Topology, hub: Hub, batch_hub: BatchHub) -> None:
        self.amqp_url = amqp_url
        self.topology = topology
        self.hub = hub
        self.batch_hub = batch_hub
        self.replica_id = uuid.uuid4().hex[:12]
        self.connected = asyncio.Event()
        self._pending = Envelope(self.replica_id)
        self._flush_scheduled = False
        self._outgoing: deque[tuple[str, bytes]] = deque()  # (message type, body)
        self._wake = asyncio.Event()
        self._peers: dict[str, float] = {}  # replica id -> when last heard (monotonic)
        self._last_heard = -PEER_SILENT_SECONDS  # from any other replica
        self.peered = asyncio.Event()  # set once another replica has been heard
        hub.share = self.share_update
        batch_hub.share = self.share_batch_message

    # --- who else is there -------------------------------------------------------------
    def has_peers(self) -> bool:
        """Whether another replica was heard lately: only then is a commit worth sending."""
        return time.monotonic() - self._last_heard < PEER_SILENT_SECONDS

    def heard(self, replica_id: str) -> bool:
        """Another replica spoke; returns whether it is new (or back after a silence)."""
        now = time.monotonic()
        last = self._peers.get(replica_id)
        self._peers[replica_id] = self._last_heard = now
        self.peered.set()
        return last is None or now - last >= PEER_SILENT_SECONDS

    def _say(self, kind: str, body: bytes = b"") -> None:
        if len(self._outgoing) >= OUTGOING_KEPT:
            self._outgoing.popleft()
            REPLICA_MESSAGES.labels("dropped").inc()
        self._outgoing.append((kind, body))
        self._wake.set()

    # --- sending: the hubs call these after a commit (never waits) ------------------
    def share_update(self, update: Snapshot, occurred_at: float | None) -> None:
        if not self.has_peers():
            return  # nobody to tell: their clients read the database when they come
        self._pending.updates.append((update, occurred_at))
        self._schedule_flush()

    def share_batch_message(self, message: StreamMessage) -> None:
        if not self.has_peers():
            return
        self._pending.batch_messages.append(message)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # What one commit pushes (a window of many jobs) is pushed in one turn of the loop:
        # it leaves as one message.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        envelope, self._pending = self._pending, Envelope(self.replica_id)
        if not envelope:
            return
        if not self.connected.is_set():
            REPLICA_MESSAGES.labels("dropped").inc()
            return
        self._say(UPDATES, encode_envelope(envelope))

    # --- receiving ---------------------------------------------------------------------
    async def on_message(self, message: AbstractIncomingMessage) -> None:
        if message.app_id == self.replica_id:
            # This replica's own commit, back from the fanout: its clients had it at once.
            # Told by the property, so the body (every snapshot of the commit) is not parsed.
            return
        if message.app_id:
            new = self.heard(message.app_id)
            if message.type == HELLO and new:
                self._say(HELLO_BACK)  # so the newcomer shares with this one at once too
            if message.type in (HELLO, HELLO_BACK):
                return
        try:
            envelope = decode_envelope(message.body)
        except ValueError as exc:
            log.warning("live-progress message dropped", error=str(exc)[:300])
            return
        if envelope.origin == self.replica_id:
            return  # this replica's own commit: its clients had it at once
        self.heard(envelope.origin)
        REPLICA_MESSAGES.labels("received").inc()
        deliver(envelope, self.hub, self.batch_hub)

    # --- the connection ----------------------------------------------------------------
    async def run(self) -> None:
        """Connect, then send and receive; after any failure, connect again."""
        while True:
            connection: AbstractRobustConnection | None = None
            try:
                connection = await aio_pika.connect_robust(
                    self.amqp_url, reconnect_interval=RECONNECT_SECONDS
                )
                await self._serve(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the feed is an optimisation: progress runs on
                log.warning(
                    "live progress between replicas unavailable; other replicas' updates "
                    "reach this one's clients from the database",
                    error=repr(exc)[:300],
                    retry_seconds=RETRY_SECONDS,
                )
            finally:
                self.connected.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close()
            await asyncio.sleep(RETRY_SECONDS)

    async def _serve(self, connection: AbstractRobustConnection) -> None:
        topo = self.topology
        channel = await connection.channel()
        # Not declared: the topology's deployment step declares it (the service user may not).
        exchange = await channel.get_exchange(topo.live_exchange_name, ensure=False)
        spec = topo.live_queue(self.replica_id)
        queue = await channel.declare_queue(
            spec.name, durable=False, exclusive=True, auto_delete=True, arguments=spec.arguments
        )
        await queue.bind(exchange)
        await queue.consume(self.on_message, no_ack=True)
        self.connected.set()
        log.info("live progress between replicas on", queue=spec.name)
        user = amqp_user_of(self.amqp_url)
        presence = asyncio.create_task(self._say_hello_every(PRESENCE_SECONDS))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._outgoing:
                    kind, body = self._outgoing[0]
                    await exchange.publish(
                        aio_pika.Message(
                            body,
                            content_type="application/json",
                            type=kind,
                            user_id=user,
                            app_id=self.replica_id,
                        ),
                        routing_key="",
                    )
                    self._outgoing.popleft()
                    if kind == UPDATES:
                        REPLICA_MESSAGES.labels("sent").inc()
        finally:
            presence.cancel()

    async def _say_hello_every(self, seconds: float) -> None:
        while True:
            self._say(HELLO)
            await asyncio.sleep(seconds)
