"""Issue 13, item 4: two replicas of every service as processes; one replica of each service is
SIGKILLed mid-load and stays dead. The survivors finish every job: nothing lost (every page of
every job, once), nothing stuck (every job ends, every queue drains, no dead letter), nothing
duplicated (each page's text once, job_updates one row per seq). WebSocket clients on the
surviving progress replica see every update in order; those on the killed one reconnect to the
survivor with ?after= and miss nothing either."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
import websockets
from websockets.exceptions import WebSocketException

from scripts.stack import SERVICES
from shared.events import TERMINAL_STATUSES
from shared.settings import Settings
from shared.topology import Topology
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient
from tests.integration.test_replicas import dense_pdf
from tests.stack_fixture import replicated_stacks

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

TEXT_DOCUMENTS = 8
PAGES = 15
SCANNED_DOCUMENTS = 2  # a text page and a scan each: the OCR replicas get work too


async def follow(clients: list[StackClient], job_id: str, timeout: float = 300.0) -> list[int]:
    """The seqs of every update of the job, from seq 1: on clients[0]'s progress replica, and
    when that connection drops before the final update, on the next one with ?after=."""
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        for client in clients:
            url = f"{client.ws}/v1/jobs/{job_id}/events?token={client.key}"
            url += f"&after={seqs[-1] if seqs else 0}"
            try:
                async with websockets.connect(url) as conn:
                    async for raw in conn:
                        message = json.loads(raw)
                        seqs.append(message["seq"])
                        if message["final"]:
                            return seqs
            except (WebSocketException, OSError, EOFError):
                pass  # its replica was killed: go on from the last seq on the next one
    return seqs


async def queue_depths(settings: Settings, topo: Topology) -> dict[str, int]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        depths = {}
        for name in topo.all_queue_names():
            queue = await channel.declare_queue(name, passive=True)
            depths[name] = int(queue.declaration_result.message_count or 0)
        return depths
    finally:
        await connection.close()


def documents(folder: Path) -> dict[Path, list[str]]:
    """Each document and what each of its pages says: a text page its marker (exactly, once),
    a scanned page a word the OCR must find."""
    out: dict[Path, list[str]] = {}
    for n in range(TEXT_DOCUMENTS):
        out[dense_pdf(folder / f"k{n}.pdf", PAGES, f"kill{n}")] = [
            f"kill{n} page {p}" for p in range(1, PAGES + 1)
        ]
    for n in range(SCANNED_DOCUMENTS):
        path = pdf_with_pages(
            folder / f"s{n}.pdf",
            [f"scan{n} text page", text_image([f"Scanned page of document {n}", "Quick fox"])],
        )
        out[path] = [f"scan{n} text page", "Scanned"]
    return out


async def wait_mid_load(pool: asyncpg.Pool, job_ids: list[uuid.UUID]) -> None:
    """Until some pages are extracted and most are not."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = await pool.fetchval(
            "SELECT count(*) FROM job_pages WHERE job_id = ANY($1::uuid[])", job_ids
        )
        if done >= PAGES:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("no page extracted within 120 s")


async def test_killing_one_replica_of_each_service_loses_sticks_and_duplicates_nothing(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, tmp_path: Path
) -> None:
    docs = documents(tmp_path)
    async with replicated_stacks(test_settings, "killrep", replica_restart=False) as pair:
        survivor, doomed = pair
        jobs = {
            await (survivor if n % 2 else doomed).submit_ok(path, ocr="auto"): markers
            for n, (path, markers) in enumerate(docs.items())
        }
        ids = [uuid.UUID(j) for j in jobs]
        watchers = [
            asyncio.create_task(follow(order, job))
            for job in jobs
            for order in ([survivor], [doomed, survivor])
        ]
        await wait_mid_load(db_pool, ids)
        for name in SERVICES:  # one replica of each service, mid-load; it stays dead
            doomed.stack.signal(name, signal.SIGKILL)
        for job in jobs:
            assert (await survivor.wait(job, timeout=300))["status"] == "completed", job
        seen = await asyncio.gather(*watchers)
        depths = await queue_depths(
            test_settings, Topology(f"{test_settings.bus_prefix}_killrep", (200, 500, 1000))
        )
        assert not survivor.stack.deaths(), survivor.stack.deaths()
        assert set(doomed.stack.deaths()) == set(SERVICES)  # they were killed mid-load

    await check_results(db_pool, jobs)
    for n, seqs in enumerate(seen):
        # Every update from seq 1 to the final one, in order, none twice, none missing.
        assert seqs == list(range(1, len(seqs) + 1)), (n, seqs)
    assert all(depth == 0 for depth in depths.values()), depths


async def check_results(pool: asyncpg.Pool, jobs: dict[str, list[str]]) -> None:
    ids = [uuid.UUID(j) for j in jobs]
    statuses = await pool.fetch(
        "SELECT job_id::text AS id, status, pages_total, seq FROM jobs WHERE job_id = ANY($1)", ids
    )
    assert {r["id"] for r in statuses if r["status"] in TERMINAL_STATUSES} == set(jobs)
    dead = await pool.fetchval("SELECT count(*) FROM dead_letters WHERE job_id = ANY($1)", ids)
    assert dead == 0
    for row in statuses:
        markers = jobs[row["id"]]
        assert row["pages_total"] == len(markers)
        pages = await pool.fetch(
            "SELECT page, coalesce(text, '') || ' ' || coalesce(ocr_text, '') AS t "
            "FROM job_pages WHERE job_id = $1 ORDER BY page",
            uuid.UUID(row["id"]),
        )
        assert [p["page"] for p in pages] == list(range(1, len(markers) + 1))
        texts = [" ".join(p["t"].split()) for p in pages]
        for text, marker in zip(texts, markers, strict=True):
            assert marker in text, (row["id"], marker, text[:200])
        joined = " ".join(texts) + " "
        for marker in markers:  # nothing twice
            assert marker == "Scanned" or joined.count(marker + " ") == 1, (row["id"], marker)
        updates: list[Any] = await pool.fetch(
            "SELECT seq FROM job_updates WHERE job_id = $1 ORDER BY seq", uuid.UUID(row["id"])
        )
        assert [u["seq"] for u in updates] == list(range(1, row["seq"] + 1))
