"""The event contract as an AsyncAPI document, generated from the real subscriptions: each
service's own `setup(ctx)` runs against an in-memory bus, and what it subscribed (queues per
group, the event types each handles, what its handlers publish) is rendered with FastStream's
AsyncAPI support and the pydantic models. `python -m shared.asyncapi > docs/asyncapi.json`
regenerates it (`make docs` does).

FastStream carries no message at run time; it stays for this rendering only.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Union, cast

import asyncpg
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange, RabbitQueue
from faststream.specification import AsyncAPI

from shared import events
from shared.blobstore import BlobStore
from shared.bus import MemoryBus
from shared.bus.core import GroupSubscription
from shared.service import ServiceContext, Setup, subscribe_runtime
from shared.settings import Settings

# The services whose setup subscribes, in document order.
SERVICES = ("ingest", "extractor", "ocr", "analyzer", "progress")
# Where a service's setup lives until it has services/<name>/app.py (the agreed entry shape).
# Ingest publishes from its HTTP routes and its outbox relay, not from a handler, so no
# subscription names what it publishes.
ENTRY_PUBLISHES: dict[str, tuple[type[events.Event], ...]] = {
    "ingest": (events.DocumentUploaded, events.JobCancelled),
}


class _DocsContext(ServiceContext):
    """A context whose background loops never run: setup is only looked at."""

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        coro.close()


@dataclass
class ServiceBus:
    service: str
    bus: MemoryBus


def setup_of(service: str) -> Setup:
    module = importlib.import_module(f"services.{service}.app")
    return cast(Setup, module.setup)


async def _subscribe_all(settings: Settings) -> list[ServiceBus]:
    buses = []
    for service in SERVICES:
        bus = MemoryBus(settings, service)
        pool = cast(asyncpg.Pool, None)  # setup only keeps it: nothing is queried
        ctx = _DocsContext(service, settings, bus, pool, BlobStore(settings.blob_dir))
        result = setup_of(service)(ctx)
        if asyncio.iscoroutine(result):
            await result
        subscribe_runtime(ctx)
        buses.append(ServiceBus(service, bus))
    return buses


def build_spec() -> dict[str, Any]:
    # Defaults only: the document must not depend on the caller's environment.
    settings = Settings.model_construct()
    buses = asyncio.run(_subscribe_all(settings))
    broker = RabbitBroker(
        "amqp://guest:guest@127.0.0.1:5672/",
        description=(
            "docpipe: one durable topic exchange; the routing key is the event type. Every "
            "message carries the AMQP user_id of its publisher, which RabbitMQ checks "
            "against the connection's user. An upstream app connects as its own user, "
            "mapped to one tenant (DOCPIPE_AMQP_TENANTS): it may publish document.uploaded "
            "only, for that tenant; any other upload is refused and recorded."
        ),
    )
    topo = buses[0].bus.topology
    exchange = RabbitExchange(topo.exchange_name, type=ExchangeType.TOPIC, durable=True)
    dlx = RabbitExchange(topo.dlx_name, type=ExchangeType.DIRECT, durable=True)
    for entry in buses:
        for sub in entry.bus.groups.values():
            _document_group(broker, exchange, entry.bus, sub)
        for broadcast in entry.bus.broadcasts:
            key = broadcast.event_type.routing_key
            broker.subscriber(
                RabbitQueue(f"{topo.prefix}.broadcast.{entry.service}.<id>", routing_key=key),
                exchange,
                title=f"{entry.service}:broadcast:{key}",
                description=(
                    f"Every `{entry.service}` process gets its own copy (an exclusive, "
                    "auto-deleted queue); never retried or dead-lettered."
                ),
            )(_stub(broadcast.event_type))
        if entry.service == "progress":
            _document_live_progress(broker, topo)
        for dead in entry.bus.dead_letter_subscriptions:
            broker.subscriber(
                RabbitQueue(topo.dlq_name(dead.group), routing_key=dead.group.name),
                dlx,
                title=f"dead-letters:{dead.group.name}",
                description=(
                    f"`{entry.service}` records the dead letters of `{topo.queue_name(dead.group)}`"
                    " (any body, as it was dead-lettered; headers say why)."
                ),
            )(_stub(dict[str, Any]))
        publishes = set(ENTRY_PUBLISHES.get(entry.service, ()))
        for sub in entry.bus.groups.values():
            publishes |= sub.publishes
        for model in sorted(publishes, key=lambda m: m.routing_key):
            broker.publisher(
                routing_key=model.routing_key,
                exchange=exchange,
                title=f"{entry.service}:{model.routing_key}",
                description=(model.__doc__ or "").strip() or None,
                schema=model,
            )
    spec = AsyncAPI(broker, title="docpipe events", version="1", schema_version="3.0.0")
    return cast(dict[str, Any], json.loads(spec.to_specification().to_json()))


def _document_group(
    broker: RabbitBroker, exchange: RabbitExchange, bus: MemoryBus, sub: GroupSubscription
) -> None:
    topo, group = bus.topology, sub.group
    models = tuple(model for model, _handler in sub.handlers.values())
    description = (
        f"Consumer group `{group.name}` of `{bus.service}` (queue `{topo.queue_name(group)}`, "
        f"dead letters in `{topo.dlq_name(group)}`, prefetch {sub.prefetch}); handles: "
        + ", ".join(m.routing_key for m in models)
    )
    work = topo.work_queue(group)
    for key in group.binding_keys:
        broker.subscriber(
            RabbitQueue(work.name, durable=True, routing_key=key, arguments=_args(work.arguments)),
            exchange,
            # One channel per binding: a group bound by two keys gets two named channels.
            title=group.name if len(group.binding_keys) == 1 else f"{group.name}:{key}",
            description=description,
        )(_stub(models[0] if len(models) == 1 else Union[models]))  # noqa: UP007


def _args(arguments: dict[str, Any]) -> Any:
    """Queue arguments as FastStream's declaration takes them (its TypedDict)."""
    return arguments


def _document_live_progress(broker: RabbitBroker, topo: Any) -> None:
    """The progress replicas' live exchange (services/progress/replica_feed.py)."""
    live = RabbitExchange(topo.live_exchange_name, type=ExchangeType.FANOUT, durable=True)
    broker.subscriber(
        RabbitQueue(
            f"{topo.live_exchange_name}.<id>", durable=False, exclusive=True, auto_delete=True
        ),
        live,
        title="progress:live",
        description=(
            "Every `progress` replica publishes each commit's updates here and reads the others' "
            "from its own exclusive, auto-deleted queue (TTL 10 s, transient, no acks): "
            '`{"v": 1, "origin": replica id, "updates": [[ProgressSnapshot, event epoch '
            'seconds or null], ...], "batch": [batch stream message, ...]}`. Best effort: what '
            "is lost is read from job_updates and batch_updates by seq."
        ),
    )(_stub(dict[str, Any]))


def _stub(body_type: Any) -> Callable[..., Coroutine[Any, Any, None]]:
    """A handler FastStream can read the message type from; it is never called."""

    async def handler(body: Any) -> None:
        """Documentation stub; the real handler is the subscription's."""

    # The type as an object: this module's annotations are strings (PEP 563).
    handler.__annotations__["body"] = body_type
    return handler


def main() -> None:
    json.dump(build_spec(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
