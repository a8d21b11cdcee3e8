"""Targets 4, 5 and 6 on real uploads.

4. Time to first progress: upload accepted -> first WebSocket message whose stage is
   "extracting" (or later), idle and with 50 jobs queued ahead.
5. Small jobs are not stuck behind big ones: a 1-page PDF submitted while the long PDF is
   being processed completes within 3 s (p95 over a few tries).
6. Memory: peak RSS of each service process, children included, while the stack processes
   the long PDF and 20 concurrent jobs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import BenchStack, corpus_files, distribution, http_client, target
from benchmarks.memory import RssSampler
from benchmarks.text_throughput import build_long_pdf
from shared.events import TERMINAL_STATUSES, JobPhase

IDLE_P95_S = 0.25
LOADED_P95_S = 1.0
SMALL_JOB_P95_S = 3.0
RSS_LIMIT_MB = 300.0

STARTED = {JobPhase.EXTRACTING, JobPhase.OCR, JobPhase.ANALYZING, JobPhase.COMPLETED}


def text_pdfs() -> list[Path]:
    return corpus_files("pdf_text", (".pdf",))


def one_page_pdf() -> Path:
    """A one-page text PDF of the corpus (pypdf's crazyones when there)."""
    files = text_pdfs()
    return next((f for f in files if f.stem == "pypdf-crazyones"), files[0])


async def time_to_first_progress(
    bs: BenchStack, client: httpx.AsyncClient, data: bytes, name: str
) -> float:
    job, accepted = await bs.submit(client, data, name)
    seen = await bs.first_ws_message(job, lambda m: m.get("stage") in STARTED, timeout=120)
    return seen - accepted


async def first_progress(
    bs: BenchStack, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    tries, queued = (2, 4) if smoke else (10, 50)
    data = one_page_pdf().read_bytes()
    backlog_files = text_pdfs()
    async with http_client() as client:
        idle = []
        for i in range(tries):
            idle.append(await time_to_first_progress(bs, client, data, f"idle-{i}.pdf"))
            await asyncio.sleep(0.2)
        loaded = []
        for i in range(max(1, tries // 2)):
            backlog = await asyncio.gather(
                *(
                    bs.submit(
                        client,
                        backlog_files[k % len(backlog_files)].read_bytes(),
                        f"q{i}-{k}.pdf",
                    )
                    for k in range(queued)
                )
            )
            loaded.append(await time_to_first_progress(bs, client, data, f"loaded-{i}.pdf"))
            await bs.wait_all([job for job, _ in backlog])
    d_idle, d_loaded = distribution(idle), distribution(loaded)
    targets = [
        target(
            "first_progress_idle_p95_s",
            d_idle["p95"],
            f"p95 <= {IDLE_P95_S} s",
            d_idle["p95"] <= IDLE_P95_S,
            distribution=d_idle,
        ),
        target(
            "first_progress_50_queued_p95_s",
            d_loaded["p95"],
            f"p95 <= {LOADED_P95_S} s with {queued} jobs queued",
            d_loaded["p95"] <= LOADED_P95_S,
            distribution=d_loaded,
        ),
    ]
    return targets, {}


async def _big_and_concurrent(
    bs: BenchStack, client: httpx.AsyncClient, long_pdf: Path, files: list[Path], concurrent: int
) -> None:
    """The long PDF and `concurrent` corpus PDFs at once, each checked when all have ended."""
    big, _ = await bs.submit(client, long_pdf.read_bytes(), long_pdf.name)
    others = await asyncio.gather(
        *(
            bs.submit(client, files[k % len(files)].read_bytes(), f"c{k}.pdf")
            for k in range(concurrent)
        )
    )
    loaded = [big] + [j for j, _ in others]
    await bs.wait_all(loaded, timeout=900)
    for job in loaded:
        status, text = await bs.job_texts(job)
        bs.check_job(f"load:{job}", status, text, True)


async def _small_behind_one_big(
    bs: BenchStack, client: httpx.AsyncClient, long_pdf: Path, small: bytes, i: int
) -> tuple[float, bool]:
    """Submit the long PDF, then the small one once the long one's extraction has started:
    the small job's seconds from upload to end, and whether the big one was still running."""
    big, _ = await bs.submit(client, long_pdf.read_bytes(), f"{i}-{long_pdf.name}")
    await bs.first_ws_message(big, lambda m: m.get("stage") in STARTED, timeout=120)
    job, accepted = await bs.submit(client, small, f"small-{i}.pdf")
    ended = await bs.wait_all([job], timeout=120)
    big_status = await bs.pool.fetchval("SELECT status FROM jobs WHERE job_id = $1::uuid", big)
    status, text = await bs.job_texts(job)
    bs.check_job(f"small-{i}", status, text, True)
    await bs.wait_all([big], timeout=900)
    status, text = await bs.job_texts(big)
    bs.check_job(f"big:{big}", status, text, True)
    return ended[job] - accepted, big_status not in TERMINAL_STATUSES


async def small_behind_big(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pages, tries, concurrent = (20, 2, 3) if smoke else (500, 5, 20)
    files = text_pdfs()
    long_pdf = work / f"long-{pages}.pdf"
    if not long_pdf.exists():
        build_long_pdf(long_pdf, pages, files)
    small = one_page_pdf().read_bytes()
    durations: list[float] = []
    overlapped = 0  # tries whose big PDF was still running when the small job ended
    sampler = RssSampler(bs.service_pids())
    with sampler.running():
        async with http_client() as client:
            # Target 6: memory while the big PDF and 20 concurrent jobs are processed.
            await _big_and_concurrent(bs, client, long_pdf, files, concurrent)
            # Target 5: a big PDF alone in progress, a small job submitted once it has
            # started; a fresh big PDF for every try, so each small job meets one still running
            # (docs/decisions/0004).
            for i in range(tries):
                duration, big_running = await _small_behind_one_big(bs, client, long_pdf, small, i)
                durations.append(duration)
                overlapped += big_running
        sampler.sample()
    dist = distribution(durations)
    peak = max(sampler.total_peak_mb.values(), default=0.0)
    targets = [
        target(
            "small_job_behind_big_p95_s",
            dist["p95"],
            f"p95 <= {SMALL_JOB_P95_S} s while a {pages}-page PDF is processed",
            dist["p95"] <= SMALL_JOB_P95_S,
            distribution=dist,
            tries_with_the_big_pdf_still_running=f"{overlapped} of {tries}",
        ),
        target(
            "peak_rss_per_service_mb",
            peak,
            f"every service, children included, <= {RSS_LIMIT_MB:g} MB",
            peak <= RSS_LIMIT_MB,
            per_service_mb={k: round(v, 1) for k, v in sampler.total_peak_mb.items()},
        ),
    ]
    return targets, {}
