"""Target 2: OCR throughput. The scanned corpus images, repeated to >= 40 pages, each a job
through the whole pipeline, against the tesseract CLI run on the same images one after another
(OMP_THREAD_LIMIT=1). Quality: mean CER over the images with ground truth. The details split
the ratio: the service's tesseract child against the CLI, image by image, and the rest."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.common import BenchStack, corpus_files, http_client, target
from services.ocr.tesseract import engine_pool, ocr_image
from shared.settings import Settings
from tests.quality import cer

SPEED_TARGET = 0.55
CER_SLACK = 0.005
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def images(smoke: bool) -> list[Path]:
    found = corpus_files("pdf_scanned", IMAGE_SUFFIXES)
    if smoke:
        return [p for p in found if p.stem == "tess-phototest"] or found[:1]
    return found


def ground_truth(image: Path) -> str | None:
    ref = image.with_name(image.stem + ".expected.txt")
    return ref.read_text(encoding="utf-8", errors="replace") if ref.exists() else None


async def tesseract_cli(path: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        "tesseract",
        str(path),
        "stdout",
        "-l",
        "eng",
        "--psm",
        "3",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    out, _ = await proc.communicate()
    return out.decode("utf-8", "replace")


async def cli_baseline(pages: list[Path]) -> tuple[list[str], dict[Path, float], float]:
    """The tesseract CLI over the pages one after another: each page's text, the first run's
    seconds per distinct image, and the total seconds."""
    texts: list[str] = []
    per_image: dict[Path, float] = {}
    started = time.monotonic()
    for p in pages:  # sequential, by definition
        began = time.monotonic()
        texts.append(await tesseract_cli(p))
        per_image.setdefault(p, time.monotonic() - began)
    return texts, per_image, time.monotonic() - started


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    unique = images(smoke)
    wanted = 2 if smoke else 40
    pages = [unique[i % len(unique)] for i in range(max(wanted, len(unique)))]

    baseline_texts, cli_seconds, baseline_s = await cli_baseline(pages)

    async with http_client() as client:
        started = time.monotonic()
        submitted = await asyncio.gather(
            *(bs.submit(client, p.read_bytes(), p.name, ocr="auto") for p in pages)
        )
    job_ids = [job for job, _ in submitted]
    ended = await bs.wait_all(job_ids)
    wall = max(ended.values()) - started

    pipe_cer: list[float] = []
    base_cer: list[float] = []
    for p, job, base_text in zip(pages, job_ids, baseline_texts, strict=True):
        status, text = await bs.job_texts(job)
        bs.check_job(f"ocr:{p.name}", status, text, bool(base_text.strip()))
        ref = ground_truth(p)
        if ref is not None:
            pipe_cer.append(cer(ref, text))
            base_cer.append(cer(ref, base_text))
    mean_pipe = statistics.fmean(pipe_cer) if pipe_cer else 0.0
    mean_base = statistics.fmean(base_cer) if base_cer else 0.0
    ratio = wall / baseline_s if baseline_s else float("inf")
    targets = [
        target(
            "ocr_speed_vs_tesseract_cli",
            ratio,
            f"pipeline wall / sequential tesseract CLI <= {SPEED_TARGET}",
            ratio <= SPEED_TARGET,
            pipeline_seconds=round(wall, 3),
            baseline_seconds=round(baseline_s, 3),
            pages=len(pages),
        ),
        target(
            "ocr_cer_vs_tesseract_cli",
            mean_pipe - mean_base,
            f"pipeline mean CER - CLI mean CER <= {CER_SLACK}",
            mean_pipe - mean_base <= CER_SLACK,
            cer_pipeline=round(mean_pipe, 4),
            cer_baseline=round(mean_base, 4),
        ),
    ]
    detail = {
        "images": [p.name for p in unique],
        "pages": len(pages),
        "tesseract_use": await _tesseract_use(bs, job_ids, started, wall),
        "engine_vs_cli": await _engine_vs_cli(unique, cli_seconds),
    }
    return targets, detail


async def _engine_vs_cli(unique: list[Path], cli_seconds: dict[Path, float]) -> dict[str, float]:
    """Where the speed comes from: the service's tesseract child (model loaded, tesserocr's
    build) against the CLI (model loaded per image, the distribution's build), both one image
    after another over the distinct images; the rest of the ratio is the two children at once."""
    settings = Settings(ocr_concurrency=1)
    engine = engine_pool(settings)
    try:
        # Once before timing: the service's children are started and loaded ahead, too.
        await ocr_image(unique[0], lang="eng", settings=settings, job_id=None, engine=engine)
        started = time.monotonic()
        for path in unique:
            result = await ocr_image(
                path, lang="eng", settings=settings, job_id=None, engine=engine
            )
            if result.failure is not None:
                raise RuntimeError(f"engine failed on {path.name}: {result.failure}")
        engine_s = time.monotonic() - started
    finally:
        await engine.close()
    cli_s = sum(cli_seconds[p] for p in unique)
    return {
        "engine_seconds": round(engine_s, 3),
        "cli_seconds": round(cli_s, 3),
        "engine_over_cli": round(engine_s / cli_s, 3) if cli_s else 0.0,
    }


async def _tesseract_use(
    bs: BenchStack, job_ids: list[str], started: float, wall: float
) -> dict[str, float]:
    """How busy the two tesseract slots were: the first image's OCR start (seconds after the
    first upload) and the share of 2 x wall spent inside tesseract."""
    row = await bs.pool.fetchrow(
        """
        SELECT min(extract(epoch FROM p.ocred_at) - p.ocr_seconds) AS first_start,
               sum(p.ocr_seconds) AS busy
        FROM job_pages p WHERE p.job_id = ANY($1::uuid[])
        """,
        [uuid.UUID(j) for j in job_ids],
    )
    first = float(row["first_start"]) + (time.monotonic() - time.time()) - started
    return {
        "first_ocr_start_s": round(first, 3),
        "tesseract_seconds": round(float(row["busy"]), 2),
        "slot_use": round(float(row["busy"]) / (2 * wall), 3),
    }
