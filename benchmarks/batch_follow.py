"""A batch of 200 corpus documents followed on one batch WebSocket (issue 12's benchmark).

The documents are the corpus's text PDFs (pdf_text/*.pdf), cycled to 200 (10 in --smoke).
The batch is created the way ingest creates one: the batch row and all its job rows in one
transaction, each document stored as a blob its tenant owns; then each job's upload is
published. One client follows WS /v1/batches/{id}/events from before the first upload.

Targets: a job's change reaches the batch client within 100 ms at p99 (from the job update's
`updated_at`, stamped when its window was applied, to the client receiving it: the same
machine's clock); no update lost (every update of every job of the batch arrives on the batch
stream once, and the stream's seq has no gap); the batch's percent never decreases. Also
reported: the batch's wall time (first upload to final message) against the same documents
submitted as single jobs through POST /v1/jobs (first upload to last job ended).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import websockets

from benchmarks.common import (
    API_KEY,
    TENANT,
    BenchStack,
    corpus_files,
    distribution,
    http_client,
    target,
)
from shared.blobstore import BlobStore
from shared.bus import Bus
from shared.events import DocumentUploaded, OcrMode
from shared.jobs import record_blob_owner

P99_TARGET_S = 0.100
DOCUMENTS = 200
SMOKE_DOCUMENTS = 10
UPLOADS_IN_FLIGHT = 16
JOBS_FOLLOWED = 5


def documents(count: int) -> list[Path]:
    files = corpus_files("pdf_text", (".pdf",))
    return [files[i % len(files)] for i in range(count)]


async def create_batch(
    bs: BenchStack, docs: list[Path]
) -> tuple[uuid.UUID, list[DocumentUploaded]]:
    """The batch row and its job rows in one transaction, as ingest writes them."""
    store = BlobStore(bs.settings.blob_dir)
    batch_id = uuid.uuid4()
    uploads = []
    for doc in docs:
        uri = await asyncio.to_thread(store.put_file, doc)
        uploads.append(
            DocumentUploaded(
                job_id=uuid.uuid4(),
                tenant=TENANT,
                document_uri=uri,
                filename=doc.name,
                ocr=OcrMode.NEVER,
                batch_id=batch_id,
            )
        )
    async with bs.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO batches (batch_id, tenant, name) VALUES ($1, $2, 'bench')",
            batch_id,
            TENANT,
        )
        for uri in {u.document_uri for u in uploads}:
            await record_blob_owner(conn, TENANT, uri)
        await conn.executemany(
            "INSERT INTO jobs (job_id, tenant, filename, document_uri, ocr_mode, batch_id) "
            "VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (u.job_id, TENANT, u.filename, u.document_uri, u.ocr.value, batch_id)
                for u in uploads
            ],
        )
    return batch_id, uploads


class Follower:
    """The batch client: every message, with when it arrived (wall clock)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[tuple[float, dict[str, Any]]] = []
        self.connected = asyncio.Event()

    async def run(self, timeout: float) -> None:
        async with asyncio.timeout(timeout), websockets.connect(self.url, max_queue=None) as ws:
            async for raw in ws:
                self.messages.append((time.time(), json.loads(raw)))
                self.connected.set()


def lags(messages: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """Seconds from each job update's commit-time stamp to the client receiving it."""
    out = []
    for at, m in messages:
        if m["type"] == "job" and m["job"].get("updated_at"):
            out.append(max(0.0, at - datetime.fromisoformat(m["job"]["updated_at"]).timestamp()))
    return out


def job_lags(messages: list[tuple[float, dict[str, Any]]]) -> list[float]:
    """The same measure on a job's own WebSocket (its messages are the snapshots)."""
    return lags([(at, {"type": "job", "job": m}) for at, m in messages])


async def lost_updates(
    bs: BenchStack, uploads: list[DocumentUploaded], stream: list[dict[str, Any]]
) -> int:
    """Job updates recorded for the batch's jobs that the client did not get, plus any
    received twice."""
    rows = await bs.pool.fetch(
        "SELECT job_id::text AS job_id, seq FROM job_updates WHERE job_id = ANY($1::uuid[])",
        [u.job_id for u in uploads],
    )
    recorded = {(r["job_id"], r["seq"]) for r in rows}
    got = [(m["job"]["job_id"], m["job"]["seq"]) for m in stream if m["type"] == "job"]
    return len(recorded - set(got)) + (len(got) - len(set(got)))


async def follow_batch(bs: BenchStack, docs: list[Path]) -> dict[str, Any]:
    batch_id, uploads = await create_batch(bs, docs)
    url = f"{bs.ws}/v1/batches/{batch_id}/events?token={API_KEY}"
    follower = Follower(url)
    task = asyncio.create_task(follower.run(timeout=1800))
    # The baseline in the same run: a few of the same jobs followed on their own WebSockets.
    job_followers = [
        Follower(f"{bs.ws}/v1/jobs/{u.job_id}/events?token={API_KEY}")
        for u in uploads[:: max(1, len(uploads) // JOBS_FOLLOWED)]
    ]
    job_tasks = [asyncio.create_task(f.run(timeout=1800)) for f in job_followers]
    for f in (follower, *job_followers):
        await asyncio.wait_for(f.connected.wait(), 30)
    bus = Bus(bs.settings, "bench-upstream")
    await bus.connect()
    try:
        started = time.monotonic()
        await asyncio.gather(*(bus.publish(u) for u in uploads))
        await task
        wall = time.monotonic() - started
        await asyncio.gather(*job_tasks)
    finally:
        await bus.stop()
    stream = [m for _, m in follower.messages[1:]]  # after the snapshot
    seqs = [m["seq"] for m in stream]
    aggregates = [m for m in stream if m["type"] == "batch"]
    percents = [follower.messages[0][1]["percent"]] + [a["percent"] for a in aggregates]
    return {
        "wall_s": wall,
        "lags": lags(follower.messages[1:]),
        "job_ws_lags": [lag for f in job_followers for lag in job_lags(f.messages[1:])],
        "lost": await lost_updates(bs, uploads, stream),
        "seq_gaps": sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1),
        "backwards": sum(1 for a, b in zip(percents, percents[1:], strict=False) if b < a),
        "messages": len(stream),
        "final": aggregates[-1] if aggregates else {},
    }


async def single_jobs_wall(bs: BenchStack, docs: list[Path]) -> float:
    # Ingest refuses a tenant's uploads beyond its concurrent-upload cap (429): stay below it.
    uploading = asyncio.Semaphore(UPLOADS_IN_FLIGHT)

    async def submit(client: httpx.AsyncClient, i: int, doc: Path) -> tuple[str, float]:
        async with uploading:
            return await bs.submit(client, doc.read_bytes(), f"single-{i}-{doc.name}")

    async with http_client() as client:
        started = time.monotonic()
        submitted = await asyncio.gather(*(submit(client, i, d) for i, d in enumerate(docs)))
        ended = await bs.wait_all([job for job, _ in submitted])
    return max(ended.values()) - started


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    docs = documents(SMOKE_DOCUMENTS if smoke else DOCUMENTS)
    batch = await follow_batch(bs, docs)
    single = await single_jobs_wall(bs, docs)
    d = distribution(batch["lags"])
    final = batch["final"]
    if final.get("status") != "completed" or final.get("jobs_completed") != len(docs):
        bs.failures.append(f"batch_follow: the batch ended {final}")
    targets = [
        target(
            "batch_update_p99_s",
            d["p99"],
            f"p99 <= {P99_TARGET_S} s from a job's change to the batch client",
            d["p99"] <= P99_TARGET_S,
            distribution=d,
            job_websocket_same_run=distribution(batch["job_ws_lags"]),
        ),
        target(
            "batch_updates_lost",
            batch["lost"] + batch["seq_gaps"],
            "0 (every job update on the batch stream once, no seq gap)",
            batch["lost"] + batch["seq_gaps"] == 0,
        ),
        target(
            "batch_percent_backwards",
            batch["backwards"],
            "0 (percent never decreases)",
            batch["backwards"] == 0,
        ),
    ]
    detail = {
        "documents": len(docs),
        "corpus": "pdf_text/*.pdf cycled",
        "batch_wall_s": round(batch["wall_s"], 2),
        "single_jobs_wall_s": round(single, 2),
        "batch_vs_single_wall": round(batch["wall_s"] / single, 3) if single else None,
        "batch_messages": batch["messages"],
        "final": final,
    }
    return targets, detail
