"""The bus topology, declared once: one durable topic exchange, a work queue per consumer
group, each with its dead-letter queue and a ladder of delay queues for retries.

    <prefix>                  topic exchange; routing key = event type
    <prefix>.dlx              direct exchange for dead letters, keyed by group
    <prefix>.<group>          work queue, dead-letters to <prefix>.dlx with key <group>
    <prefix>.<group>.dlq      dead-letter queue of that group
    <prefix>.<group>.retry.N  delay queue: TTL N ms, then dead-letters back into the work queue
    <prefix>.progress.live    fanout exchange: every update a progress replica commits
    <prefix>.progress.live.<id>  one per progress replica (exclusive, auto-delete), bound to it

Retries go to the delay queue through the default exchange, so only the group that failed
sees the message again (republishing on the topic exchange would re-deliver to every group).

Queue types (DOCPIPE_QUEUE_TYPE; docs/decisions/1090-quorum-queues-urgent-lanes.md): classic
queues are the above, work queues with priorities. Quorum queues (replicated, they survive a
node) have no priorities on RabbitMQ 3.x, so each worker group gets two lanes instead:

    <prefix>.urgent                 topic exchange for messages of at least urgent_priority
    <prefix>.<group>.urgent         urgent lane, bound to <prefix>.urgent by the group's keys
    <prefix>.<group>.urgent.retry.N its delay queues, back into the urgent lane

The bulk lane keeps the classic names. Progress has one queue, bound to both exchanges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.settings import Settings

QueueType = Literal["classic", "quorum"]

# Classic work queues are priority queues, so a small interactive job can overtake a bulk
# backlog. Quorum queues route such messages to an urgent lane instead.
MAX_PRIORITY = 9
# A message redelivered this often (its consumer's connection died each time, as when a
# document kills its worker) is dead-lettered by a quorum queue: the poison guard. Failures
# a handler sees go through the retry ladder and never count here; a node failover returns a
# consumer's messages once. RabbitMQ 4 sets 20 by default too.
DELIVERY_LIMIT = 20
BULK = "bulk"
URGENT = "urgent"
# A progress replica's queue of live updates from the others (see Topology.live_queue).
LIVE_MESSAGE_TTL_MS = 10_000
LIVE_QUEUE_MAX_LENGTH = 10_000


@dataclass(frozen=True)
class ConsumerGroup:
    name: str
    binding_keys: tuple[str, ...]
    extra: dict[str, object] = field(default_factory=dict)
    # Whether the group gets an urgent lane on quorum queues. Progress does not: it applies
    # every event within milliseconds, and one queue keeps a job's events in their order.
    lanes: bool = True


EXTRACTOR = ConsumerGroup("extractor", ("document.uploaded",))
OCR = ConsumerGroup("ocr", ("images.extracted",))
# The analyzer takes the chunks inside the page events: only pages that carry chunks are
# routed to it (see events.chunked_route).
ANALYZER = ConsumerGroup(
    "analyzer",
    (
        "page.extracted.chunks",
        "pages.extracted.chunks",
        "page.ocred.chunks",
        "document.summarize",  # a job's document summary, from its chunk summaries (AI)
    ),
)
# The progress service sees every event, including its own job.completed.
PROGRESS = ConsumerGroup("progress", ("#",), lanes=False)

GROUPS: tuple[ConsumerGroup, ...] = (EXTRACTOR, OCR, ANALYZER, PROGRESS)


@dataclass(frozen=True)
class QueueSpec:
    """A queue as declared: its name, its arguments, the routing keys that bind it."""

    name: str
    durable: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)
    binding_keys: tuple[str, ...] = ()
    # The exchanges the binding keys bind it to (each key on each exchange).
    exchanges: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    prefix: str
    retry_delays_ms: tuple[int, ...]
    queue_type: QueueType = "classic"
    # On quorum queues, messages of at least this priority take the urgent lane.
    urgent_priority: int = 5

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(
            settings.bus_prefix,
            tuple(settings.retry_delays_ms),
            settings.queue_type,
            settings.small_job_priority,
        )

    @property
    def quorum(self) -> bool:
        return self.queue_type == "quorum"

    # --- names -------------------------------------------------------------
    @property
    def exchange_name(self) -> str:
        return self.prefix

    @property
    def dlx_name(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def urgent_exchange_name(self) -> str:
        return f"{self.prefix}.urgent"

    @property
    def event_exchanges(self) -> tuple[str, ...]:
        """The topic exchanges events are published on (the urgent one only on quorum)."""
        if self.quorum:
            return (self.exchange_name, self.urgent_exchange_name)
        return (self.exchange_name,)

    def lanes(self, group: ConsumerGroup) -> tuple[str, ...]:
        """The group's work queues by lane: urgent first, so it is consumed first."""
        return (URGENT, BULK) if self.quorum and group.lanes else (BULK,)

    def lane_of(self, priority: int | None) -> str:
        """Which lane a message of this priority takes (always bulk on classic queues)."""
        return URGENT if self.quorum and (priority or 0) >= self.urgent_priority else BULK

    def exchange_for(self, priority: int | None) -> str:
        """The topic exchange an event of this priority is published on."""
        return self.lane_exchange(self.lane_of(priority))

    def lane_exchange(self, lane: str) -> str:
        return self.urgent_exchange_name if lane == URGENT else self.exchange_name

    def queue_name(self, group: ConsumerGroup, lane: str = BULK) -> str:
        name = f"{self.prefix}.{group.name}"
        return f"{name}.{URGENT}" if lane == URGENT and group.lanes else name

    def dlq_name(self, group: ConsumerGroup) -> str:
        return f"{self.queue_name(group)}.dlq"

    def retry_queue_name(self, group: ConsumerGroup, delay_ms: int, lane: str = BULK) -> str:
        return f"{self.queue_name(group, lane)}.retry.{delay_ms}"

    # --- declarations ------------------------------------------------------
    def _typed(self, arguments: dict[str, Any]) -> dict[str, Any]:
        return {**arguments, "x-queue-type": "quorum"} if self.quorum else arguments

    def work_queue(self, group: ConsumerGroup, lane: str = BULK) -> QueueSpec:
        """The group's queue (of one lane): bound to the lane's topic exchange by each of the
        group's keys, its rejects dead-lettered to the group's dead-letter queue."""
        arguments: dict[str, Any] = {
            "x-dead-letter-exchange": self.dlx_name,
            "x-dead-letter-routing-key": group.name,
        }
        if self.quorum:
            arguments["x-delivery-limit"] = DELIVERY_LIMIT
            # Without lanes (progress) the queue takes both exchanges' events.
            exchanges = (self.lane_exchange(lane),) if group.lanes else self.event_exchanges
        else:
            arguments["x-max-priority"] = MAX_PRIORITY
            exchanges = (self.exchange_name,)
        return QueueSpec(
            self.queue_name(group, lane),
            arguments=self._typed(arguments),
            binding_keys=group.binding_keys,
            exchanges=exchanges,
        )

    def dead_letter_queue(self, group: ConsumerGroup) -> QueueSpec:
        """Bound to the dead-letter exchange by the group's name. No delivery limit: a dead
        letter that cannot be recorded goes back to its queue until it can."""
        return QueueSpec(
            self.dlq_name(group),
            arguments=self._typed({}),
            binding_keys=(group.name,),
            exchanges=(self.dlx_name,),
        )

    def retry_queue(self, group: ConsumerGroup, delay_ms: int, lane: str = BULK) -> QueueSpec:
        return QueueSpec(
            self.retry_queue_name(group, delay_ms, lane),
            arguments=self._typed(
                {
                    "x-message-ttl": delay_ms,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue_name(group, lane),
                }
            ),
        )

    # --- live progress across replicas (services/progress/replica_feed.py) ----------
    @property
    def live_exchange_name(self) -> str:
        """The fanout exchange every progress replica publishes its committed updates to."""
        return f"{self.prefix}.progress.live"

    def live_queue_name(self, replica_id: str) -> str:
        """A progress replica's own queue on the live exchange (exclusive, auto-delete: it
        goes with the replica's connection, so it never needs cleaning up)."""
        return f"{self.live_exchange_name}.{replica_id}"

    def live_queue(self, replica_id: str) -> QueueSpec:
        """A replica's queue of the others' updates: transient, and short-lived by design: an
        update older than a few seconds is read from job_updates instead, and a replica that
        stops reading (paused, stuck) cannot pile them up in the broker."""
        return QueueSpec(
            self.live_queue_name(replica_id),
            durable=False,
            arguments={
                "x-message-ttl": LIVE_MESSAGE_TTL_MS,
                "x-max-length": LIVE_QUEUE_MAX_LENGTH,
                "x-overflow": "drop-head",
            },
        )

    def all_queue_names(self) -> list[str]:
        names: list[str] = []
        for g in GROUPS:
            names += [self.queue_name(g), self.dlq_name(g)]
            for lane in sorted(self.lanes(g)):  # bulk, then urgent
                if lane == URGENT:
                    names.append(self.queue_name(g, lane))
                names += [self.retry_queue_name(g, d, lane) for d in self.retry_delays_ms]
        return names
