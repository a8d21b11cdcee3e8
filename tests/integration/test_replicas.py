"""Issue 13, item 4, replicas that agree: two progress replicas' hubs joined through the live
exchange on the real broker; two sets of every service as processes on this machine, where
extractor replicas share the work and a WebSocket client on either progress replica sees
every update of its job, in order, with no gap. (Killing one replica of each service mid-load:
tests/reliability/test_replicas_killed.py.)"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from services.progress.hub import BatchHub, Hub
from services.progress.replica_feed import ReplicaFeed
from shared.bus.publisher import declare_topology_at
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import delete_bus
from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient
from tests.stack_fixture import replicated_stacks

pytestmark = pytest.mark.integration

WORDS = ("alpha", "beta", "gamma", "delta", "invoice", "total", "revenue", "contract", "annex")


def dense_pdf(path: Path, pages: int, tag: str) -> Path:
    """`pages` pages of 60 lines of words: a document that takes the extractor a while."""
    texts = []
    for number in range(1, pages + 1):
        lines = [
            " ".join(WORDS[(number + row + col) % len(WORDS)] for col in range(12))
            for row in range(60)
        ]
        texts.append(f"{tag} page {number}\n" + "\n".join(lines))
    return pdf_with_pages(path, texts)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus text exposition's samples of `name` with these labels."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}\{{([^}}]*)\}}\s+(\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def service_metric(client: StackClient, service: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{client.stack.url(service)}/metrics")).text
    return metric(text, name, **labels)


async def watch_all(client: StackClient, job_id: str, timeout: float = 240.0) -> list[int]:
    """Every update of the job from seq 1 (after=0) until the final one: their seqs."""
    url = f"{client.ws}/v1/jobs/{job_id}/events?token={client.key}&after=0"
    seqs: list[int] = []
    async with asyncio.timeout(timeout), websockets.connect(url) as conn:
        async for raw in conn:
            message = json.loads(raw)
            seqs.append(message["seq"])
            if message["final"]:
                assert message["status"] == "completed", message
                break
    return seqs


# --- the hubs of two replicas, joined on the broker ------------------------------------------


@pytest.fixture
async def live_topology(test_settings: Settings, rabbit_available: None) -> AsyncIterator[Topology]:
    settings = test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_live"})
    topo = Topology.from_settings(settings)
    await declare_topology_at(settings.amqp_url, topo)
    yield topo
    await delete_bus(settings)


def _update(job_id: uuid.UUID, seq: int) -> dict[str, Any]:
    return {"job_id": str(job_id), "seq": seq, "percent": float(seq), "final": False}


async def test_what_one_replica_commits_reaches_the_others_clients_once_in_order(
    test_settings: Settings, live_topology: Topology
) -> None:
    hubs = [(Hub(), BatchHub()) for _ in range(2)]
    feeds = [ReplicaFeed(test_settings.amqp_url, live_topology, *pair) for pair in hubs]
    tasks = [asyncio.create_task(feed.run()) for feed in feeds]
    try:
        async with asyncio.timeout(30):
            for feed in feeds:
                await feed.connected.wait()
                await feed.peered.wait()  # each has heard the other: both share
        (hub_a, batch_a), (hub_b, batch_b) = hubs
        job, batch = uuid.uuid4(), uuid.uuid4()
        on_a, on_b = hub_a.subscribe(job), hub_b.subscribe(job)
        batch_on_b = batch_b.subscribe(batch)
        for seq in range(1, 51):
            hub_a.publish(job, _update(job, seq))
            if seq % 10 == 0:
                batch_a.publish({"type": "batch", "batch_id": str(batch), "seq": seq // 10})
                await asyncio.sleep(0)  # several commits, several messages
        got_b = [(await on_b.get(10)) for _ in range(50)]
        assert [u["seq"] for u in got_b if u is not None] == list(range(1, 51))
        assert [(await batch_on_b.get(10) or {}).get("seq") for _ in range(5)] == [1, 2, 3, 4, 5]
        # Its own commits reached replica A's client once: at once, not again off the broker.
        got_a = [(await on_a.get(0.01)) for _ in range(50)]
        assert [u["seq"] for u in got_a if u is not None] == list(range(1, 51))
        hub_b.publish(job, _update(job, 51))  # and the other way round
        assert (await on_a.get(10) or {}).get("seq") == 51
        await asyncio.sleep(0.5)
        assert await on_a.get(0.01) is None and await on_b.get(0.01) == _update(job, 51)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- two sets of every service -----------------------------------------------------------------

# One document at a time per extractor: its prefetch is then 1 + 2 spare.
REPLICA_ENV = {"DOCPIPE_EXTRACTOR_CONCURRENCY": "1"}
DOCUMENTS = 10
PAGES = 10


@pytest.fixture(scope="module")
async def replicas(
    test_settings: Settings, db_pool: Any, rabbit_available: None
) -> AsyncIterator[tuple[StackClient, StackClient]]:
    """The first set has every service; the second all but the extractor, whose replica a
    test starts while the first one is busy."""
    async with replicated_stacks(
        test_settings,
        "replicas",
        REPLICA_ENV,
        replica_services=("ingest", "ocr", "analyzer", "progress"),
    ) as pair:
        yield pair


async def test_an_extractor_replica_started_beside_a_busy_one_takes_its_share(
    replicas: tuple[StackClient, StackClient], tmp_path: Path
) -> None:
    """The first extractor is as busy as can be (paused, holding what it took) while the
    second starts, however long that start takes on a loaded machine: the second finds the
    backlog on the queue, not in the first one's hands."""
    first, second = replicas
    paths = [dense_pdf(tmp_path / f"d{n}.pdf", PAGES, f"doc{n}") for n in range(DOCUMENTS)]
    jobs = [await first.submit_ok(paths[0], ocr="never")]
    async with asyncio.timeout(120):
        while await received(first) < 1:
            await asyncio.sleep(0.1)
    late = second.stack.replica(("extractor",), log_dir=None)
    first.stack.signal("extractor", signal.SIGSTOP)
    try:
        # The backlog arrives while the first is busy: it may take its prefetch of it.
        jobs += [await first.submit_ok(path, ocr="never") for path in paths[1:]]
        await late.start()
        await late.wait_ready(300)
        late_client = StackClient(late, first.key, first.other_key, first.admin_key)
        async with asyncio.timeout(120):  # the backlog is still on the queue for it to take
            while await received(late_client) < 1:
                await asyncio.sleep(0.1)
        first.stack.signal("extractor", signal.SIGCONT)
        for job in jobs:
            assert (await first.wait(job, timeout=300))["status"] == "completed"
        took = [await received(c, "acked") for c in (first, late_client)]
    finally:
        first.stack.signal("extractor", signal.SIGCONT)
        await late.stop()
    # Both processed documents, and every document was processed.
    assert took[0] >= 1 and took[1] >= 1 and sum(took) >= DOCUMENTS, took


async def received(client: StackClient, outcome: str = "received") -> float:
    """How many documents the client's stack's extractor received (or acked)."""
    return await service_metric(
        client, "extractor", "docpipe_messages_total", queue="extractor", outcome=outcome
    )


async def test_clients_of_both_progress_replicas_see_every_update_in_order(
    replicas: tuple[StackClient, StackClient], tmp_path: Path
) -> None:
    first, second = replicas
    paths = [dense_pdf(tmp_path / f"w{n}.pdf", 12, f"watch{n}") for n in range(3)]
    jobs = [
        await (first if n % 2 else second).submit_ok(p, ocr="never") for n, p in enumerate(paths)
    ]
    seen = await asyncio.gather(*(watch_all(c, job) for job in jobs for c in (first, second)))
    for n, job in enumerate(jobs):
        on_first, on_second = seen[2 * n], seen[2 * n + 1]
        # Every update from seq 1 to the final one, no gap, no repeat, on both replicas.
        assert on_first == list(range(1, len(on_first) + 1)), (job, on_first)
        assert on_second == on_first, (job, on_second)
    # The two replicas both applied events, and each pushed the other's updates live (not
    # only through its poll of the database): the feed carried them.
    for client in (first, second):
        received = await service_metric(
            client, "progress", "docpipe_progress_replica_messages_total", outcome="received"
        )
        assert received > 0
