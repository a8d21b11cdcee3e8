"""Synthetic progress load: jobs created straight in the database, events published straight
onto the bus (no extractor involved), for targets 3 (push latency) and 7 (bus efficiency)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import time
import uuid
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aio_pika
import websockets

from benchmarks.common import API_KEY, TENANT, BenchStack, distribution, target
from shared.events import DocumentUploaded, Event, ExtractionStarted, PageExtracted
from shared.jobs import ensure_job

PUSH_P99_TARGET_S = 0.050
PUBLISH_IN_FLIGHT = 256
BUS_RATIO_TARGET = 0.5


async def make_jobs(bs: BenchStack, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for jid in ids:
        await ensure_job(
            bs.pool,
            DocumentUploaded(job_id=jid, tenant=TENANT, document_uri="blob://sha256/" + "0" * 64),
        )
    return ids


class Publisher:
    """Publishes events like the services do (persistent, typed headers), with confirms
    collected in bulk so the publisher is not the bottleneck."""

    def __init__(self, bs: BenchStack) -> None:
        self.bs = bs
        self.conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def __aenter__(self) -> Publisher:
        self.conn = await aio_pika.connect_robust(self.bs.settings.amqp_url)
        channel = await self.conn.channel(publisher_confirms=True)
        self.exchange = await channel.get_exchange(self.bs.settings.bus_prefix)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.conn is not None
        await self.conn.close()

    def message(self, event: Event) -> aio_pika.Message:
        return aio_pika.Message(
            event.model_dump_json().encode(),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.message_id(),
            content_type="application/json",
            headers={"x-event-type": event.routing_key},
        )

    async def publish(self, event: Event) -> None:
        await self.send(self.message(event), event.route)

    async def send(self, message: aio_pika.Message, route: str) -> None:
        await self.exchange.publish(message, routing_key=route)


async def _started(bs: BenchStack, pub: Publisher, ids: list[uuid.UUID], pages: int) -> None:
    await asyncio.gather(
        *(pub.publish(ExtractionStarted(job_id=j, format="pdf", pages_total=pages)) for j in ids)
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        n = await bs.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) AND pages_total IS NOT NULL",
            ids,
        )
        if n == len(ids):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("ExtractionStarted not applied")


class Watcher:
    """One WebSocket client of one job: every message with its receive time."""

    def __init__(self, url: str, job_id: str) -> None:
        self.url = url
        self.job_id = job_id
        # (receive time, seq, extract done, final) per message
        self.messages: list[tuple[float, int, int, bool]] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with websockets.connect(self.url, max_queue=None) as conn:
            async for raw in conn:
                msg = json.loads(raw)
                final = bool(msg.get("final"))
                self.messages.append(
                    (time.monotonic(), msg["seq"], msg["stages"]["extract"]["done"], final)
                )
                self.ready.set()
                if final:
                    break


def watch_jobs(urls: list[tuple[str, str]], conn: Connection) -> None:
    """In a process of its own: connect every client, say "ready", then return what each saw.

    The clients live apart from the publisher so that neither delays the other's clock
    readings (time.monotonic is the system-wide CLOCK_MONOTONIC: comparable across processes).
    """

    async def main() -> list[tuple[str, list[tuple[float, int, int, bool]]]]:
        watchers = [Watcher(url, job) for url, job in urls]
        tasks = [asyncio.create_task(w.run()) for w in watchers]
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in watchers)), 60)
        conn.send("ready")
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 180)
        return [(w.job_id, w.messages) for w in watchers]

    try:
        conn.send(asyncio.run(main()))
    except Exception as exc:  # reported to the parent, which fails the bench
        conn.send(exc)
    finally:
        conn.close()


async def _recv(conn: Connection, timeout: float) -> Any:
    loop = asyncio.get_running_loop()
    ready = await loop.run_in_executor(None, conn.poll, timeout)
    if not ready:
        raise TimeoutError("the WebSocket clients' process did not answer")
    got = conn.recv()
    if isinstance(got, Exception):
        raise got
    return got


# What the WebSocket clients' process returns: per job, every message as
# (receive time, seq, extract done, final).
Seen = list[tuple[str, list[tuple[float, int, int, bool]]]]


@dataclass
class PushScore:
    """Latencies from publish of a job's k-th event to a client seeing extract.done >= k."""

    latencies: list[float] = field(default_factory=list)
    worst: list[tuple[float, float]] = field(default_factory=list)  # (latency, s after start)
    lost: int = 0  # clients that missed an update or the final snapshot
    disorder: int = 0  # clients that saw seq or done go backwards


def score_push(
    seen: Seen, sent: dict[uuid.UUID, list[float]], pages: int, start: float
) -> PushScore:
    """Match every client's messages against the publish times of its job's events."""
    score = PushScore()
    for job, messages in seen:
        times = sent[uuid.UUID(job)]
        seqs = [m[1] for m in messages]
        dones = [m[2] for m in messages]
        if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)) or any(
            b < a for a, b in zip(dones, dones[1:], strict=False)
        ):
            score.disorder += 1
        if any(b != a + 1 for a, b in zip(seqs[1:], seqs[2:], strict=False)):
            score.lost += 1  # after the first (latest) snapshot every update must arrive
        if not messages or not messages[-1][3] or dones[-1] != pages:
            score.lost += 1
        k = 0
        for received, _seq, done, _final in messages:
            while k < done and k < len(times):
                score.latencies.append(max(0.0, received - times[k]))
                score.worst.append((score.latencies[-1], times[k] - start))
                k += 1
    return score


async def publish_on_schedule(
    pub: Publisher, ids: list[uuid.UUID], pages: int, rate: float
) -> tuple[dict[uuid.UUID, list[float]], float, float]:
    """Publish `pages` PageExtracted events per job at `rate` events/s, without waiting for
    each confirm (up to PUBLISH_IN_FLIGHT unconfirmed), as the services publish; returns each
    job's publish times, the start (monotonic) and the seconds the schedule took."""
    sent: dict[uuid.UUID, list[float]] = {j: [] for j in ids}
    in_flight = asyncio.Semaphore(PUBLISH_IN_FLIGHT)
    pending: set[asyncio.Task[None]] = set()

    async def publish(message: aio_pika.Message, route: str) -> None:
        try:
            await pub.send(message, route)
        finally:
            in_flight.release()

    # Serialised before the clock starts: the publisher shares the two cores with the
    # stack, and only the publish itself is part of the measurement.
    schedule = [
        (j, pub.message(event), event.route)
        for page in range(1, pages + 1)
        for j in ids
        for event in [PageExtracted(job_id=j, page=page, text="x", has_text_layer=True)]
    ]
    interval = 1.0 / rate
    start = time.monotonic()
    for n, (j, message, route) in enumerate(schedule):
        delay = start + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        sent[j].append(time.monotonic())
        # Tasks start in creation order, so one job's events go out in order.
        task = asyncio.create_task(publish(message, route))
        pending.add(task)
        task.add_done_callback(pending.discard)
    publish_seconds = time.monotonic() - start
    await asyncio.gather(*pending)
    return sent, start, publish_seconds


async def push_latency(bs: BenchStack, smoke: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Target 3: `rate` PageExtracted events/s across `jobs` jobs, 2 WebSocket clients per job;
    latency = publish of the k-th event of a job -> a client sees extract.done >= k.

    The clients run in a process of their own (see watch_jobs)."""
    jobs, clients_per_job, rate, seconds = (4, 2, 100, 1.0) if smoke else (100, 2, 1000, 10.0)
    pages = int(rate * seconds / jobs)
    ids = await make_jobs(bs, jobs)
    async with Publisher(bs) as pub:
        await _started(bs, pub, ids, pages)
        urls = [
            (f"{bs.ws}/v1/jobs/{j}/events?token={API_KEY}", str(j))
            for j in ids
            for _ in range(clients_per_job)
        ]
        parent, child = multiprocessing.get_context("spawn").Pipe()
        watcher_process = multiprocessing.get_context("spawn").Process(
            target=watch_jobs, args=(urls, child), daemon=True
        )
        watcher_process.start()
        try:
            assert await _recv(parent, 90) == "ready"
            sent, start, publish_seconds = await publish_on_schedule(pub, ids, pages, rate)
            seen: Seen = await _recv(parent, 200)
        finally:
            watcher_process.join(10)
            if watcher_process.is_alive():
                watcher_process.kill()

    score = score_push(seen, sent, pages, start)
    events = sum(len(times) for times in sent.values())
    dist = distribution(score.latencies)
    ok = dist["p99"] <= PUSH_P99_TARGET_S and score.lost == 0 and score.disorder == 0
    targets = [
        target(
            "progress_push_latency_p99_s",
            dist["p99"],
            f"p99 <= {PUSH_P99_TARGET_S} s at {rate} events/s, {jobs} jobs, "
            f"{len(urls)} clients; no update lost; order kept",
            ok,
            distribution=dist,
            clients_missing_updates=score.lost,
            clients_out_of_order=score.disorder,
            achieved_publish_rate=round(events / publish_seconds, 1),
            # When the slowest updates were published: one moment means one stall.
            slowest_at_s=sorted({round(t, 1) for _, t in sorted(score.worst)[-50:]}),
        )
    ]
    return targets, {"events": events, "jobs": jobs, "clients": len(urls)}


async def raw_consume_rate(bs: BenchStack, count: int) -> float:
    """aio-pika alone: publish `count` progress-like messages to a scratch queue, then time
    consuming and acking them all (prefetch as the progress service's)."""
    conn = await aio_pika.connect_robust(bs.settings.amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        name = f"{bs.settings.bus_prefix}.bench.raw"
        await channel.declare_queue(
            name, durable=True, arguments={"x-max-priority": 9}, auto_delete=False
        )
        body = PageExtracted(job_id=uuid.uuid4(), page=1, text="x").model_dump_json().encode()
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=name,
                )
                for _ in range(count)
            )
        )
        consumer = await conn.channel()
        await consumer.set_qos(prefetch_count=256)
        q = await consumer.get_queue(name)
        got = 0
        finished = asyncio.Event()

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            await msg.ack()
            got += 1
            if got >= count:
                finished.set()

        started = time.monotonic()
        tag = await q.consume(on_message)
        await asyncio.wait_for(finished.wait(), 120)
        seconds = time.monotonic() - started
        await q.cancel(tag)
        await channel.queue_delete(name)
        return count / seconds
    finally:
        await conn.close()


async def bus_efficiency(
    bs: BenchStack, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Target 7: the rate at which the progress service drains a backlog of progress events
    (its sustainable rate: faster arrivals grow its queue) over the rate at which bare aio-pika
    drains the same number of messages (consume and ack), both measured here."""
    jobs, count = (4, 400) if smoke else (50, 10_000)
    pages = count // jobs
    raw = await raw_consume_rate(bs, count)
    ids = await make_jobs(bs, jobs)
    async with Publisher(bs) as pub:
        await _started(bs, pub, ids, pages)
        events = [
            PageExtracted(job_id=j, page=p, text="x", has_text_layer=True)
            for p in range(1, pages + 1)
            for j in ids
        ]
        # Like the raw baseline, time the drain of a backlog: the progress process is paused
        # while the burst is published, so the publisher's own speed cannot cap the rate.
        bs.stack.signal("progress", signal.SIGSTOP)
        try:
            publish_started = time.monotonic()
            for i in range(0, len(events), 500):  # confirms in bulk
                await asyncio.gather(*(pub.publish(e) for e in events[i : i + 500]))
            published = time.monotonic()
        finally:
            started = time.monotonic()
            bs.stack.signal("progress", signal.SIGCONT)
    # The burst has been sent; wait until the progress service has applied all of it.
    while True:
        done = await bs.pool.fetchval(
            "SELECT coalesce(sum(done), 0) FROM job_progress "
            "WHERE job_id = ANY($1::uuid[]) AND stage = 'extract'",
            ids,
        )
        if done >= count:
            break
        if time.monotonic() - started > 300:
            raise TimeoutError(f"progress applied {done} of {count} events")
        await asyncio.sleep(0.02)
    seconds = time.monotonic() - started
    rate = count / seconds
    ratio = rate / raw if raw else 0.0
    updates = await bs.pool.fetchval(
        "SELECT count(*) FROM job_updates WHERE job_id = ANY($1::uuid[])", ids
    )
    targets = [
        target(
            "progress_rate_vs_raw_consume",
            ratio,
            f"progress events/s / raw aio-pika consume+ack events/s >= {BUS_RATIO_TARGET}",
            ratio >= BUS_RATIO_TARGET,
            progress_events_per_s=round(rate, 1),
            raw_events_per_s=round(raw, 1),
            publish_seconds=round(published - publish_started, 3),
            job_updates_written=updates,
            events=count,
        )
    ]
    return targets, {}
