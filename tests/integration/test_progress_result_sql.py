"""The result's text, pages, chunks and failed pages, assembled by PostgreSQL from the rows
(services/progress/store/items.py): the shape clients read, and the same bytes whatever order
the rows were written in."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.progress import store
from services.progress.result import finished_at_of, result_head
from shared.events import JobStatus

pytestmark = pytest.mark.integration

T0 = datetime.now(UTC).replace(microsecond=0)
PAGES: list[dict[str, Any]] = [
    {"page": 1, "has_text_layer": True, "text": "Hello", "extracted_at": T0 + timedelta(seconds=3),
     "ocr_pending": False, "ocred_at": None, "ocr_text": None, "ocr_seconds": None,
     "error": None, "ocr_error": None, "ocr_confidence": None,
     "headings": [{"level": 1, "text": "Hello"}]},
    {"page": 2, "has_text_layer": False, "text": "", "extracted_at": T0 + timedelta(seconds=4),
     "ocr_pending": True, "ocred_at": T0 + timedelta(seconds=9), "ocr_text": "Scanned",
     "ocr_seconds": 1.25, "error": None, "ocr_error": None, "ocr_confidence": 91.26,
     "headings": None},
    {"page": 3, "has_text_layer": True, "text": "Both", "extracted_at": T0 + timedelta(seconds=5),
     "ocr_pending": True, "ocred_at": T0 + timedelta(seconds=8), "ocr_text": "Figure",
     "ocr_seconds": 0.5, "error": None, "ocr_error": "tesseract timed out",
     "ocr_confidence": None, "headings": []},
    {"page": 4, "has_text_layer": False, "text": "", "extracted_at": T0 + timedelta(seconds=6),
     "ocr_pending": False, "ocred_at": None, "ocr_text": None, "ocr_seconds": None,
     "error": "The page could not be read.", "ocr_error": None, "ocr_confidence": None,
     "headings": None},
]  # fmt: skip
CHUNKS = [  # page, source, index, cost, seconds after T0
    (1, "text-layer", 0, 0.1, 10),
    (1, "text-layer", 1, 0.2, 11),
    (2, "ocr", 0, 0.3, 12),
    (3, "text-layer", 0, 0.0, 10),
    (3, "ocr", 0, 0.0, 13),
]


def chunk_id(job_id: uuid.UUID, page: int, source: str, idx: int) -> uuid.UUID:
    return uuid.uuid5(job_id, f"{page}/{source}/{idx}")


async def store_job(conn: asyncpg.Connection, order: random.Random | None) -> uuid.UUID:
    """A job with PAGES and CHUNKS written in the given shuffle (None: as listed), and its
    result stored the way progress stores it."""
    job_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO jobs (job_id, tenant, document_uri, filename, status, created_at) "
        "VALUES ($1, 'dev', 'blob://none', 'doc.pdf', 'completed', $2)",
        job_id,
        T0,
    )
    pages, chunks = PAGES[:], CHUNKS[:]
    if order is not None:
        order.shuffle(pages)
        order.shuffle(chunks)
    for p in pages:
        await conn.execute(
            "INSERT INTO job_pages (job_id, page, has_text_layer, text, extracted_at, "
            "ocr_pending, ocred_at, ocr_text, ocr_seconds, error, ocr_error, ocr_confidence, "
            "headings) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)",
            job_id,
            *p.values(),
        )
    for page, source, idx, cost, seconds in chunks:
        await conn.execute(
            "INSERT INTO job_chunks (chunk_id, job_id, page, source, idx, start_offset, "
            "end_offset, text, analysis, cost_usd, analyzed_at) "
            "VALUES ($1, $2, $3, $4, $5, 0, 5, $6, $7, $8, $9)",
            chunk_id(job_id, page, source, idx),
            job_id,
            page,
            source,
            idx,
            f"{page}-{source}-{idx}",
            {"analyzer": "builtin/1", "cost_usd": cost},
            cost,
            T0 + timedelta(seconds=seconds),
        )
    totals = (await store.item_totals(conn, [job_id]))[job_id]
    job = {"job_id": job_id, "filename": "doc.pdf", "format": "pdf", "pages_total": 4,
           "created_at": T0, "started_at": T0 + timedelta(seconds=2),
           "document_metadata": {"title": "A title"}}  # fmt: skip
    finished = finished_at_of(job["started_at"], totals)
    head = result_head(job, totals, status=JobStatus.COMPLETED, finished_at=finished)
    await store.insert_results(conn, [(job_id, head)])
    return job_id


async def test_result_shape(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        job_id = await store_job(conn, None)
        result = await conn.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
        totals = (await store.item_totals(conn, [job_id]))[job_id]
    assert totals.chunks == 5
    assert result["text"] == "Hello\n\nScanned\n\nBoth\n\nFigure"
    assert result["pages"] == [
        {"number": 1, "text": "Hello", "source": "text-layer",
         "headings": [{"level": 1, "text": "Hello"}]},
        {"number": 2, "text": "Scanned", "source": "ocr", "ocr_confidence": 91.3},
        {"number": 3, "text": "Both", "source": "text-layer", "ocr_text": "Figure",
         "error": "tesseract timed out"},
        {"number": 4, "text": "", "source": "text-layer", "error": "The page could not be read."},
    ]  # fmt: skip
    assert result["failed_pages"] == [
        {"page": 3, "reason": "tesseract timed out"},
        {"page": 4, "reason": "The page could not be read."},
    ]
    assert [(c["page"], c["source"], c["index"], c["text"]) for c in result["chunks"]] == [
        (1, "text-layer", 0, "1-text-layer-0"),
        (1, "text-layer", 1, "1-text-layer-1"),
        (2, "ocr", 0, "2-ocr-0"),
        (3, "text-layer", 0, "3-text-layer-0"),
        (3, "ocr", 0, "3-ocr-0"),
    ]
    assert result["chunks"][2]["analysis"] == {"analyzer": "builtin/1", "cost_usd": 0.3}
    assert result["timings"]["finished_at"] == (T0 + timedelta(seconds=13)).isoformat()
    assert result["timings"]["ocr_seconds"] == 1.75
    assert result["cost"] == {"total_usd": 0.6}
    assert result["status"] == "completed" and result["partial"] is False
    assert result["metadata"]["title"] == "A title" and result["metadata"]["page_count"] == 4


async def test_result_is_byte_identical_whatever_the_row_order(db_pool: asyncpg.Pool) -> None:
    rng = random.Random(7)
    texts = set()
    async with db_pool.acquire() as conn:
        for i in range(6):
            job_id = await store_job(conn, rng if i else None)
            text = await conn.fetchval(
                "SELECT (result - 'job_id')::text FROM job_results WHERE job_id = $1", job_id
            )
            for page, source, idx, *_ in CHUNKS:  # chunk ids differ between jobs by design
                text = text.replace(
                    str(chunk_id(job_id, page, source, idx)), f"{page}{source}{idx}"
                )
            texts.add(text)
    assert len(texts) == 1
    assert json.loads(texts.pop())["text"].startswith("Hello")


async def test_result_is_stored_once(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        job_id = await store_job(conn, None)
        await store.insert_results(conn, [(job_id, {"status": "failed"})])
        status = await conn.fetchval(
            "SELECT result->>'status' FROM job_results WHERE job_id = $1", job_id
        )
    assert status == "completed"


async def test_page_tables_are_kept_and_shown_on_their_page(db_pool: asyncpg.Pool) -> None:
    """A page.extracted's tables through the write path progress uses, into the result's
    page; a page without tables shows none."""
    from services.progress.store.items import write_pages_extracted
    from shared.events import PageExtracted, Table

    job_id = uuid.uuid4()
    rows = [["Vessel", "Berth"], ["Aurora", "North 4"]]
    events = [
        PageExtracted(job_id=job_id, page=1, text="Vessel | Berth\nAurora | North 4",
                      tables=[Table(index=0, rows=rows)]),
        PageExtracted(job_id=job_id, page=2, text="Lofoten | East 2",
                      tables=[Table(index=0, rows=[["Lofoten", "East 2"]], first_row=2,
                                    truncated=True)]),
        PageExtracted(job_id=job_id, page=3, text="No table here."),
    ]  # fmt: skip
    async with db_pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO jobs (job_id, tenant, document_uri, filename, status, created_at) "
            "VALUES ($1, 'dev', 'blob://none', 'plan.docx', 'completed', $2)",
            job_id,
            T0,
        )
        await write_pages_extracted(conn, events, {})
        totals = (await store.item_totals(conn, [job_id]))[job_id]
        job = {"job_id": job_id, "filename": "plan.docx", "format": "docx", "pages_total": 3,
               "created_at": T0, "started_at": T0}  # fmt: skip
        head = result_head(job, totals, status=JobStatus.COMPLETED, finished_at=T0)
        await store.insert_results(conn, [(job_id, head)])
        result = await conn.fetchval("SELECT result FROM job_results WHERE job_id = $1", job_id)
    assert [page.get("tables") for page in result["pages"]] == [
        [{"index": 0, "rows": rows}],
        [{"index": 0, "rows": [["Lofoten", "East 2"]], "first_row": 2, "truncated": True}],
        None,
    ]
