"""Replicas that agree (issue 13, item 4): the same measurements with one replica and with two,
in the same run.

- Progress push latency with two progress replicas, the WebSocket clients split over them, at
  the push benchmark's 1,000 events/s and 200 clients (synthetic.py's load and scoring); the
  single-replica figure is measured first, on the same stack.
- Text PDF throughput with two extractor replicas against one (it must not be worse), and how
  soon an extractor replica started beside a busy one takes its first document, and its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import API_KEY, BenchStack, corpus_files, distribution, http_client, target
from benchmarks.synthetic import (
    PUSH_P99_TARGET_S,
    Publisher,
    Seen,
    _recv,
    _started,
    make_jobs,
    publish_on_schedule,
    score_push,
    watch_jobs,
)
from benchmarks.text_throughput import build_long_pdf
from scripts.stack import Stack

# Two extractor replicas' throughput over one's: "not worse", with room for the run's noise.
THROUGHPUT_RATIO_TARGET = 0.95
# A replica started beside a busy one takes its first document within this (from its start).
TAKES_SHARE_TARGET_S = 15.0


async def _started_replica(bs: BenchStack, services: tuple[str, ...]) -> Stack:
    replica = bs.stack.replica(services)
    await replica.start()
    try:
        await replica.wait_ready(120)
    except BaseException:
        await replica.stop()
        raise
    return replica


async def _push_run(bs: BenchStack, ws_bases: list[str], smoke: bool) -> dict[str, Any]:
    """synthetic.push_latency's load, its clients spread over `ws_bases` in turn."""
    jobs, clients_per_job, rate, seconds = (4, 2, 100, 1.0) if smoke else (100, 2, 1000, 10.0)
    pages = int(rate * seconds / jobs)
    ids = await make_jobs(bs, jobs)
    async with Publisher(bs) as pub:
        await _started(bs, pub, ids, pages)
        urls = [
            (
                f"{ws_bases[(n * clients_per_job + c) % len(ws_bases)]}/v1/jobs/{j}/events"
                f"?token={API_KEY}",
                str(j),
            )
            for n, j in enumerate(ids)
            for c in range(clients_per_job)
        ]
        spawn = multiprocessing.get_context("spawn")
        parent, child = spawn.Pipe()
        watcher_process = spawn.Process(target=watch_jobs, args=(urls, child), daemon=True)
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
    return {
        "distribution": distribution(score.latencies),
        "clients_missing_updates": score.lost,
        "clients_out_of_order": score.disorder,
        "achieved_publish_rate": round(events / publish_seconds, 1),
        "events": events,
        "clients": len(urls),
        "replicas": len(ws_bases),
    }


async def push_two_replicas(
    bs: BenchStack, _work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Push latency with one progress replica, then with two (clients split over them)."""
    single = await _push_run(bs, [bs.ws], smoke)
    replica = await _started_replica(bs, ("progress",))
    try:
        two = await _push_run(bs, [bs.ws, replica.url("progress").replace("http", "ws", 1)], smoke)
    finally:
        await replica.stop()
    p99 = two["distribution"]["p99"]
    ok = (
        p99 <= PUSH_P99_TARGET_S
        and two["clients_missing_updates"] == 0
        and two["clients_out_of_order"] == 0
    )
    targets = [
        target(
            "progress_push_latency_p99_two_replicas_s",
            p99,
            f"p99 <= {PUSH_P99_TARGET_S} s with two progress replicas, clients split over them, "
            f"{two['events']} events, {two['clients']} clients; no update lost; order kept",
            ok,
            two_replicas=two,
            one_replica=single,
        )
    ]
    return targets, {"one_replica_p99_s": single["distribution"]["p99"]}


# --- extractor replicas ---------------------------------------------------------------------


def _documents(work: Path, smoke: bool) -> list[tuple[str, bytes]]:
    """The corpus's text PDFs and a few longer ones built from them: many documents, so two
    replicas have something to share."""
    files = corpus_files("pdf_text", (".pdf",))
    if smoke:
        files = files[:3]
    count, pages = (2, 10) if smoke else (6, 60)
    built = [
        build_long_pdf(work / f"replicas-{n}.pdf", pages, files[n:] + files[:n])
        for n in range(count)
    ]
    return [(f.name, f.read_bytes()) for f in [*files, *built]]


async def _throughput(bs: BenchStack, docs: list[tuple[str, bytes]]) -> float:
    """Seconds from the first upload to the last job's end (every job must complete)."""
    async with http_client() as client:
        started = time.monotonic()
        submitted = await asyncio.gather(
            *(bs.submit(client, data, name, ocr="never") for name, data in docs)
        )
    ids = [job for job, _ in submitted]
    ended = await bs.wait_all(ids)
    for job in ids:
        status, text = await bs.job_texts(job)
        bs.check_job(f"extractor replicas: job {job}", status, text, baseline_has_text=False)
    return max(ended.values()) - started


async def _extractor_received(url: str) -> float:
    """How many documents the extractor at `url` has received, from its /metrics."""
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{url}/metrics")).text
    total = 0.0
    for labels, value in re.findall(r"^docpipe_messages_total\{([^}]*)\}\s+(\S+)$", text, re.M):
        if 'queue="extractor"' in labels and 'outcome="received"' in labels:
            total += float(value)
    return total


async def _late_replica(bs: BenchStack, docs: list[tuple[str, bytes]]) -> dict[str, Any]:
    """A backlog on one busy extractor; a second starts: seconds from its start to its first
    document, and how many it took. The busy one is paused (holding what it took) until the
    second has its first document, so a small backlog does not run out while the second's
    process starts on a loaded machine; what the second finds is what the first left on the
    queue."""
    async with http_client() as client:
        submitted = await asyncio.gather(
            *(bs.submit(client, data, name, ocr="never") for name, data in docs)
        )
    bs.stack.signal("extractor", signal.SIGSTOP)
    started = time.monotonic()
    replica = bs.stack.replica(("extractor",))
    first_taken: float | None = None
    try:
        await replica.start()
        while first_taken is None and time.monotonic() - started < 180:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet
                if await _extractor_received(replica.url("extractor")) > 0:
                    first_taken = time.monotonic() - started
            await asyncio.sleep(0.1)
        bs.stack.signal("extractor", signal.SIGCONT)
        await bs.wait_all([job for job, _ in submitted])
        taken = await _extractor_received(replica.url("extractor"))
    finally:
        bs.stack.signal("extractor", signal.SIGCONT)
        await replica.stop()
    return {
        "seconds_to_first_document": None if first_taken is None else round(first_taken, 2),
        "documents_taken": int(taken),
        "documents": len(docs),
    }


async def extractor_replicas(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = _documents(work, smoke)
    one = await _throughput(bs, docs)
    replica = await _started_replica(bs, ("extractor",))
    try:
        two = await _throughput(bs, docs)
    finally:
        await replica.stop()
    late = await _late_replica(bs, docs)
    ratio = one / two if two else 0.0  # throughput ratio: two replicas' over one's
    first = late["seconds_to_first_document"]
    targets = [
        target(
            "text_pdf_throughput_two_extractors_vs_one",
            ratio,
            f"throughput with two extractor replicas / with one >= {THROUGHPUT_RATIO_TARGET} "
            f"({len(docs)} text PDFs, ocr=never)",
            ratio >= THROUGHPUT_RATIO_TARGET,
            one_replica_seconds=round(one, 2),
            two_replicas_seconds=round(two, 2),
        ),
        target(
            "extractor_replica_takes_work_s",
            first if first is not None else float("inf"),
            f"an extractor replica started beside a busy (paused) one takes a document within "
            f"{TAKES_SHARE_TARGET_S} s of its start (process start included)",
            first is not None and first <= TAKES_SHARE_TARGET_S and late["documents_taken"] >= 1,
            **late,
        ),
    ]
    return targets, {"documents": len(docs)}
