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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings

# Work queues are priority queues, so a small interactive job can overtake a bulk backlog.
MAX_PRIORITY = 9
# A progress replica's queue of live updates from the others (see Topology.live_queue).
LIVE_MESSAGE_TTL_MS = 10_000
LIVE_QUEUE_MAX_LENGTH = 10_000


@dataclass(frozen=True)
class ConsumerGroup:
    name: str
    binding_keys: tuple[str, ...]
    extra: dict[str, object] = field(default_factory=dict)


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
PROGRESS = ConsumerGroup("progress", ("#",))

GROUPS: tuple[ConsumerGroup, ...] = (EXTRACTOR, OCR, ANALYZER, PROGRESS)


@dataclass(frozen=True)
class QueueSpec:
    """A queue as declared: its name, its arguments, the routing keys that bind it."""

    name: str
    durable: bool = True
    arguments: dict[str, Any] = field(default_factory=dict)
    binding_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    prefix: str
    retry_delays_ms: tuple[int, ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> Topology:
        return cls(settings.bus_prefix, tuple(settings.retry_delays_ms))

    # --- names -------------------------------------------------------------
    @property
    def exchange_name(self) -> str:
        return self.prefix

    @property
    def dlx_name(self) -> str:
        return f"{self.prefix}.dlx"

    def queue_name(self, group: ConsumerGroup) -> str:
        return f"{self.prefix}.{group.name}"

    def dlq_name(self, group: ConsumerGroup) -> str:
        return f"{self.queue_name(group)}.dlq"

    def retry_queue_name(self, group: ConsumerGroup, delay_ms: int) -> str:
        return f"{self.queue_name(group)}.retry.{delay_ms}"

    # --- declarations ------------------------------------------------------
    def work_queue(self, group: ConsumerGroup) -> QueueSpec:
        """The group's queue: bound to the topic exchange by each of the group's keys, its
        rejects dead-lettered to the group's dead-letter queue."""
        return QueueSpec(
            self.queue_name(group),
            arguments={
                "x-dead-letter-exchange": self.dlx_name,
                "x-dead-letter-routing-key": group.name,
                "x-max-priority": MAX_PRIORITY,
            },
            binding_keys=group.binding_keys,
        )

    def dead_letter_queue(self, group: ConsumerGroup) -> QueueSpec:
        """Bound to the dead-letter exchange by the group's name."""
        return QueueSpec(self.dlq_name(group), binding_keys=(group.name,))

    def retry_queue(self, group: ConsumerGroup, delay_ms: int) -> QueueSpec:
        return QueueSpec(
            self.retry_queue_name(group, delay_ms),
            arguments={
                "x-message-ttl": delay_ms,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": self.queue_name(group),
            },
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
            names += [self.retry_queue_name(g, d) for d in self.retry_delays_ms]
        return names
