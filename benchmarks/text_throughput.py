"""Target 1: text PDF throughput at the quality of the best engine, with `ocr=never` and with
the default options.

Input: every text PDF of the corpus plus a long PDF built by concatenating corpus PDFs with
pypdf. Baselines, each in one process of its own: bare pypdf, pypdfium2 and pdfminer.six loops
(each engine's plain text extraction, page by page). The pipeline runs every file as a job,
from first upload to last job ended, twice: with `ocr=never` (the baselines read text layers
only) and with the options left out, as a user submits (embedded images are OCRed where they
likely hold text).
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
DEFAULTS_SPEED_TARGET = 0.6
ENGINES = ("pypdf", "pdfium", "pdfminer")


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
    elif engine == "pdfminer":
        from pdfminer.high_level import extract_text

        texts += [extract_text(path) for path in paths]
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


async def pipeline_run(
    bs: BenchStack, files: list[Path], ocr: str | None
) -> tuple[float, list[str]]:
    """Every file as a job at once; the wall time from the first upload to the last job's end,
    and the job ids in the order of `files`."""
    async with http_client() as client:
        datas = [f.read_bytes() for f in files]
        started = time.monotonic()
        submitted = await asyncio.gather(
            *(bs.submit(client, d, f.name, ocr=ocr) for f, d in zip(files, datas, strict=True))
        )
    job_ids = [job for job, _ in submitted]
    ended = await bs.wait_all(job_ids)
    return max(ended.values()) - started, job_ids


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    files = inputs(work, smoke)
    engine_runs = {engine: await run_engine(engine, files) for engine in ENGINES}
    seconds = {engine: round(s, 3) for engine, (s, _) in engine_runs.items()}
    wall, job_ids = await pipeline_run(bs, files, ocr="never")
    wall_defaults, default_ids = await pipeline_run(bs, files, ocr=None)
    per_file = []
    for i, f in enumerate(files):
        baselines = {engine: texts[i] for engine, (_, texts) in engine_runs.items()}
        per_file.append(
            await _quality(bs, f, {"never": job_ids[i], "defaults": default_ids[i]}, baselines)
        )
    pypdf_s = seconds["pypdf"]
    ratio = wall / pypdf_s if pypdf_s else float("inf")
    ratio_defaults = wall_defaults / pypdf_s if pypdf_s else float("inf")
    graded = [r for r in per_file if "met" in r]
    worst = min((r["recall_pipeline"] - r["recall_best"] for r in graded), default=0.0)
    worst_defaults = min((r["recall_defaults"] - r["recall_best"] for r in graded), default=0.0)
    targets = [
        target(
            "text_pdf_speed_vs_pypdf",
            ratio,
            f"pipeline wall (ocr=never) / bare pypdf loop <= {SPEED_TARGET}",
            ratio <= SPEED_TARGET,
            pipeline_seconds=round(wall, 3),
            **{f"{engine}_seconds": s for engine, s in seconds.items()},
            ratio_to_pdfium=round(wall / seconds["pdfium"], 3) if seconds["pdfium"] else None,
        ),
        target(
            "text_pdf_defaults_speed_vs_pypdf",
            ratio_defaults,
            f"pipeline wall (default options) / bare pypdf loop <= {DEFAULTS_SPEED_TARGET}",
            ratio_defaults <= DEFAULTS_SPEED_TARGET,
            pipeline_seconds=round(wall_defaults, 3),
            pypdf_seconds=pypdf_s,
            ocr=await _ocr_summary(bs, default_ids),
        ),
        target(
            "text_pdf_quality_vs_best_engine",
            min(worst, worst_defaults),
            f"pipeline recall, ocr=never and default options, >= best of {', '.join(ENGINES)} "
            f"- {RECALL_SLACK} on every file with a reference",
            all(r["met"] for r in graded),
            worst_ocr_never=round(worst, 3),
            worst_defaults=round(worst_defaults, 3),
        ),
    ]
    detail = {
        "files": len(files),
        "pages": sum(_pages(f) for f in files),
        "long_pdf_timeline_s": await _timeline(bs, job_ids[-1]),
        "per_file": per_file,
    }
    return targets, detail


async def _quality(
    bs: BenchStack, f: Path, jobs: dict[str, str], baselines: dict[str, str]
) -> dict[str, Any]:
    """One file's row: the jobs' status and, where the corpus has the expected text, the word
    recall of the pipeline (ocr=never, and default options) and of each bare engine, and
    whether both runs are within RECALL_SLACK of the best engine ("met")."""
    row: dict[str, Any] = {"file": f.name}
    texts = {}
    baseline_has_text = any(t.strip() for t in baselines.values())
    for run_name, job in jobs.items():
        status, texts[run_name] = await bs.job_texts(job)
        bs.check_job(f"text:{f.name} ({run_name})", status, texts[run_name], baseline_has_text)
        row[f"status_{run_name}"] = status
    expected = f.with_name(f.stem + ".expected.txt")
    if expected.exists():
        ref = expected.read_text(encoding="utf-8", errors="replace")
        row["recall_pipeline"] = round(word_recall(ref, texts["never"]), 3)
        row["recall_defaults"] = round(word_recall(ref, texts["defaults"]), 3)
        for engine, text in baselines.items():
            row[f"recall_{engine}"] = round(word_recall(ref, text), 3)
        row["recall_best"] = max(row[f"recall_{engine}"] for engine in baselines)
        lowest = min(row["recall_pipeline"], row["recall_defaults"])
        row["met"] = lowest >= row["recall_best"] - RECALL_SLACK
    return row


async def _ocr_summary(bs: BenchStack, job_ids: list[str]) -> dict[str, Any]:
    """What embedded-image OCR did in the default-options run: pages with OCR, images OCRed,
    OCR CPU seconds and the words it added (from the database)."""
    row = await bs.pool.fetchrow(
        """
        SELECT count(*) FILTER (WHERE ocred_at IS NOT NULL) AS pages_ocred,
               coalesce(sum(ocr_seconds), 0) AS ocr_seconds,
               coalesce(sum(array_length(regexp_split_to_array(
                   nullif(btrim(ocr_text), ''), '\\s+'), 1)), 0) AS ocr_words
        FROM job_pages WHERE job_id = ANY($1::uuid[])
        """,
        [uuid.UUID(j) for j in job_ids],
    )
    return {k: round(float(v), 3) for k, v in dict(row or {}).items()}


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
