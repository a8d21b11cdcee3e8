"""Duplicate documents: the time to complete a duplicate of a 500-page document (its result is
copied from the completed original, nothing is extracted again), against the time the
original took to process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import BenchStack, corpus_files, distribution, http_client, target
from benchmarks.text_throughput import build_long_pdf

DUPLICATE_P95_S = 1.0


async def check_duplicate(bs: BenchStack, job: str, original: str, what: str) -> None:
    """A duplicate completes with the original's text, and reuses it (nothing extracted)."""
    row = await bs.pool.fetchrow(
        "SELECT j.status, j.deduplicated_from, r.result->>'text' AS text, "
        "       s.sha256 = j.sha256 AS same_document "
        "FROM jobs j LEFT JOIN job_results r USING (job_id) "
        "LEFT JOIN jobs s ON s.job_id = j.deduplicated_from WHERE j.job_id = $1",
        uuid.UUID(job),
    )
    bs.check_job(what, row["status"], row["text"] or "", baseline_has_text=True)
    # The source may be the original or an earlier job of the same bytes and options (the text
    # benchmark builds the same long PDF): either way nothing was extracted again.
    if row["deduplicated_from"] is None or not row["same_document"]:
        bs.failures.append(f"{what}: processed again instead of reusing {original}")


async def duplicate_of_long_pdf(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    pages, tries = (20, 2) if smoke else (500, 5)
    long_pdf = build_long_pdf(work / "dedup-long.pdf", pages, corpus_files("pdf_text", (".pdf",)))
    data = long_pdf.read_bytes()
    async with http_client() as client:
        # From sending the upload (a duplicate may complete before its 202 is read) to the
        # commit of the job's completion.
        sent = time.monotonic()
        original, _ = await bs.submit(client, data, "original.pdf", force=True)
        processed = (await bs.wait_all([original]))[original] - sent
        seconds = []
        for i in range(tries):
            sent = time.monotonic()
            job, _ = await bs.submit(client, data, f"duplicate-{i}.pdf", force=False)
            seconds.append((await bs.wait_all([job]))[job] - sent)
            await check_duplicate(bs, job, original, f"duplicate {i}")
    d = distribution(seconds)
    targets = [
        target(
            "dedup_duplicate_500_pages_p95_s",
            d["p95"],
            f"<= {DUPLICATE_P95_S} s",
            d["p95"] <= DUPLICATE_P95_S,
            pages=pages,
            original_seconds=round(processed, 3),
            duplicate=d,
        )
    ]
    return targets, {"pages": pages, "original_seconds": processed, "duplicate_seconds": seconds}
