"""Target 1: text PDF throughput at the quality of the best engine.

Input: every text PDF of the corpus plus a long PDF built by concatenating corpus PDFs with
pypdf. Baselines, each in one process of its own: a bare pypdf loop (extract_text per page) and
a bare pypdfium2 loop (get_text_range per page). The pipeline runs every file as a job
(ocr=never: the baselines read text layers only) from first upload to last job ended.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import multiprocessing
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import BenchStack, CorpusMissing, corpus_files, http_client, target
from tests.quality import word_recall

RECALL_SLACK = 0.01
SPEED_TARGET = 0.25


def build_long_pdf(out: Path, pages: int, sources: list[Path]) -> Path:
    """Concatenate the sources' pages, cycling through them, until `pages` pages.

    CorpusMissing when no source has a page pypdf can read (there is nothing to cycle)."""
    from pypdf import PdfReader, PdfWriter

    source_pages = []
    for path in sources:
        try:
            reader = PdfReader(str(path))
            if not reader.is_encrypted:
                source_pages += list(reader.pages)
        except Exception:  # a source pypdf cannot open is left out
            continue
    if not source_pages:
        raise CorpusMissing(
            f"No readable PDF page among the {len(sources)} sources of the {pages}-page PDF "
            f"(the text PDFs of the corpus): set DOCPIPE_CORPUS to the corpus folder."
        )
    writer = PdfWriter()
    for page in itertools.islice(itertools.cycle(source_pages), pages):
        writer.add_page(page)
    with open(out, "wb") as fh:
        writer.write(fh)
    return out


def engine_loop(engine: str, paths: list[str]) -> tuple[float, list[str]]:
    """The bare engine over every page of every file, timed inside its own process."""
    import logging

    logging.disable(logging.CRITICAL)
    texts: list[str] = []
    started = time.perf_counter()
    if engine == "pypdf":
        from pypdf import PdfReader

        for path in paths:
            reader = PdfReader(path)
            texts.append("\n".join(page.extract_text() or "" for page in reader.pages))
    else:
        import pypdfium2 as pdfium

        for path in paths:
            doc = pdfium.PdfDocument(path)
            parts = []
            for index in range(len(doc)):
                page = doc[index]
                textpage = page.get_textpage()
                parts.append(textpage.get_text_range())
                textpage.close()
                page.close()
            doc.close()
            texts.append("\n".join(parts))
    return time.perf_counter() - started, texts


async def run_engine(engine: str, paths: list[Path]) -> tuple[float, list[str]]:
    ctx = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return await loop.run_in_executor(pool, engine_loop, engine, [str(p) for p in paths])


def inputs(work: Path, smoke: bool) -> list[Path]:
    files = corpus_files("pdf_text", (".pdf",))
    if smoke:
        files = [f for f in files if f.stem in ("pypdf-crazyones", "pdfbox-eu-001")] or files[:2]
    long_pages = 20 if smoke else 500
    long_pdf = build_long_pdf(work / f"long-{long_pages}.pdf", long_pages, files)
    return [*files, long_pdf]


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    files = inputs(work, smoke)
    pypdf_s, pypdf_texts = await run_engine("pypdf", files)
    pdfium_s, pdfium_texts = await run_engine("pdfium", files)

    async with http_client() as client:
        datas = [f.read_bytes() for f in files]
        started = time.monotonic()
        submitted = await asyncio.gather(
            *(bs.submit(client, d, f.name, ocr="never") for f, d in zip(files, datas, strict=True))
        )
    job_ids = [job for job, _ in submitted]
    ended = await bs.wait_all(job_ids)
    wall = max(ended.values()) - started

    per_file = [
        await _quality(bs, f, job, a, b)
        for f, job, a, b in zip(files, job_ids, pypdf_texts, pdfium_texts, strict=True)
    ]
    quality_ok = all(r["met"] for r in per_file if "met" in r)
    ratio = wall / pypdf_s if pypdf_s else float("inf")
    worst = min(
        (
            r["recall_pipeline"] - max(r["recall_pypdf"], r["recall_pdfium"])
            for r in per_file
            if "met" in r
        ),
        default=0.0,
    )
    targets = [
        target(
            "text_pdf_speed_vs_pypdf",
            ratio,
            f"pipeline wall / bare pypdf loop <= {SPEED_TARGET}",
            ratio <= SPEED_TARGET,
            pipeline_seconds=round(wall, 3),
            pypdf_seconds=round(pypdf_s, 3),
            pdfium_seconds=round(pdfium_s, 3),
            ratio_to_pdfium=round(wall / pdfium_s, 3) if pdfium_s else None,
        ),
        target(
            "text_pdf_quality_vs_best_engine",
            worst,
            f"pipeline recall >= best bare engine - {RECALL_SLACK} on every file with a reference",
            quality_ok,
        ),
    ]
    pages = sum(_pages(f) for f in files)
    detail = {
        "files": len(files),
        "pages": pages,
        "long_pdf_timeline_s": await _timeline(bs, job_ids[-1]),
        "per_file": per_file,
    }
    return targets, detail


async def _quality(
    bs: BenchStack, f: Path, job: str, pypdf_text: str, pdfium_text: str
) -> dict[str, Any]:
    """One file's row: the job's status and, where the corpus has the expected text, the word
    recall of the pipeline and of both bare engines, and whether the pipeline is within
    RECALL_SLACK of the better engine ("met")."""
    status, text = await bs.job_texts(job)
    baseline_has_text = bool(pypdf_text.strip() or pdfium_text.strip())
    bs.check_job(f"text:{f.name}", status, text, baseline_has_text)
    row: dict[str, Any] = {"file": f.name, "status": status}
    expected = f.with_name(f.stem + ".expected.txt")
    if expected.exists():
        ref = expected.read_text(encoding="utf-8", errors="replace")
        row |= {
            "recall_pipeline": round(word_recall(ref, text), 3),
            "recall_pypdf": round(word_recall(ref, pypdf_text), 3),
            "recall_pdfium": round(word_recall(ref, pdfium_text), 3),
        }
        best = max(row["recall_pypdf"], row["recall_pdfium"])
        row["met"] = row["recall_pipeline"] >= best - RECALL_SLACK
    return row


async def _timeline(bs: BenchStack, job_id: str) -> dict[str, float]:
    """Where the long PDF's time went, in seconds from its upload: extraction started, last
    page extracted, last chunk analysed, job completed (all from the database)."""
    row = await bs.pool.fetchrow(
        """
        SELECT extract(epoch FROM j.started_at - j.created_at) AS started,
               (SELECT extract(epoch FROM max(p.extracted_at) - j.created_at)
                  FROM job_pages p WHERE p.job_id = j.job_id) AS last_page,
               (SELECT extract(epoch FROM max(c.analyzed_at) - j.created_at)
                  FROM job_chunks c WHERE c.job_id = j.job_id) AS last_chunk,
               extract(epoch FROM j.updated_at - j.created_at) AS completed
        FROM jobs j WHERE j.job_id = $1
        """,
        uuid.UUID(job_id),
    )
    return {k: round(float(v), 3) for k, v in dict(row or {}).items() if v is not None}


def _pages(path: Path) -> int:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(path))
    try:
        return len(doc)
    finally:
        doc.close()
