"""Fair shares between tenants (issue 13, item 6; decision 1080).

Tenant A submits 500 documents (the corpus's text PDFs, in turn); then tenant B submits one
1-page PDF, several times, each after the last has ended, while A's backlog is still queued.
Target: B's job completes within 3 s of its upload at p95. Also reported: A's throughput
(documents a second, from its first upload to its last job's end) against A alone, the same
500 documents measured first in the same run.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import (
    FAIR_KEYS,
    BenchStack,
    corpus_files,
    distribution,
    http_client,
    target,
)
from benchmarks.latency import one_page_pdf

B_P95_S = 3.0
A_THROUGHPUT_RATIO = 0.9  # B's few one-page jobs should cost A next to nothing
UPLOADS_AT_ONCE = 8

KEY_A, KEY_B = list(FAIR_KEYS)


async def _submit_backlog(
    bs: BenchStack, client: httpx.AsyncClient, docs: list[bytes], tag: str
) -> tuple[list[str], float]:
    """A's documents, UPLOADS_AT_ONCE uploads at a time; the job ids and the first upload's
    acceptance (monotonic)."""
    gate = asyncio.Semaphore(UPLOADS_AT_ONCE)

    async def one(k: int) -> tuple[str, float]:
        async with gate:
            return await bs.submit(client, docs[k], f"{tag}-{k}.pdf", key=KEY_A)

    submitted = await asyncio.gather(*(one(k) for k in range(len(docs))))
    return [job for job, _ in submitted], min(at for _, at in submitted)


async def _throughput(bs: BenchStack, jobs: list[str], started: float, what: str) -> float:
    ended = await bs.wait_all(jobs, timeout=1800)
    for job in jobs[:: max(1, len(jobs) // 20)]:  # a sample: every job's text is costly
        status, text = await bs.job_texts(job)
        bs.check_job(f"{what}:{job}", status, text, True)
    failed = await bs.pool.fetchval(
        "SELECT count(*) FROM jobs WHERE job_id = ANY($1::uuid[]) AND status <> 'completed'",
        [uuid.UUID(j) for j in jobs],
    )
    if failed:
        bs.failures.append(f"{what}: {failed} jobs did not complete")
    return len(jobs) / (max(ended.values()) - started)


async def _held_of_a(bs: BenchStack) -> int:
    held: int = await bs.pool.fetchval(
        "SELECT count(*) FROM held_uploads WHERE tenant = $1", FAIR_KEYS[KEY_A]
    )
    return held


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    count, tries = (24, 2) if smoke else (500, 7)
    files = corpus_files("pdf_text", (".pdf",))
    docs = [files[k % len(files)].read_bytes() for k in range(count)]
    small = one_page_pdf().read_bytes()
    async with http_client() as client:
        jobs, started = await _submit_backlog(bs, client, docs, "alone")
        alone = await _throughput(bs, jobs, started, "A alone")

        jobs, started = await _submit_backlog(bs, client, docs, "shared")
        latencies: list[float] = []
        behind = 0  # tries that ended with A's jobs still held
        for i in range(tries):
            job, accepted = await bs.submit(client, small, f"b-{i}.pdf", key=KEY_B)
            ended = await bs.wait_all([job], timeout=120)
            latencies.append(ended[job] - accepted)
            status, text = await bs.job_texts(job)
            bs.check_job(f"B-{i}", status, text, True)
            behind += await _held_of_a(bs) > 0
            await asyncio.sleep(0.5)
        shared = await _throughput(bs, jobs, started, "A with B")
    dist = distribution(latencies)
    ratio = shared / alone
    throughput = {
        "a_alone_docs_per_s": round(alone, 2),
        "a_with_b_docs_per_s": round(shared, 2),
        "a_documents": count,
    }
    targets = [
        target(
            "fair_share_b_one_page_p95_s",
            dist["p95"],
            f"p95 <= {B_P95_S} s with tenant A's {count} documents submitted before",
            dist["p95"] <= B_P95_S,
            distribution=dist,
            tries_with_a_still_queued=f"{behind} of {tries}",
            **throughput,
        ),
        target(
            "fair_share_a_throughput_ratio",
            ratio,
            f">= {A_THROUGHPUT_RATIO} of A alone (same run)",
            ratio >= A_THROUGHPUT_RATIO,
            **throughput,
        ),
    ]
    return targets, {}
