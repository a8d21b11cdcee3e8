"""Result assembly is pure and deterministic."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from services.progress.result import assemble_result, finished_at_of, result_json

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
JOB = {
    "job_id": uuid.UUID(int=1),
    "filename": "doc.pdf",
    "format": "pdf",
    "pages_total": 3,
    "created_at": T0,
    "started_at": T0 + timedelta(seconds=2),
}
PAGES = [
    {"page": 1, "has_text_layer": True, "text": "Hello", "extracted_at": T0 + timedelta(seconds=3),
     "ocr_pending": False, "ocred_at": None, "ocr_text": None, "error": None, "ocr_error": None},
    {"page": 2, "has_text_layer": False, "text": "", "extracted_at": T0 + timedelta(seconds=4),
     "ocr_pending": True, "ocred_at": T0 + timedelta(seconds=9), "ocr_text": "Scanned",
     "ocr_seconds": 1.25, "error": None, "ocr_error": None},
    {"page": 3, "has_text_layer": True, "text": "Both", "extracted_at": T0 + timedelta(seconds=5),
     "ocr_pending": True, "ocred_at": T0 + timedelta(seconds=8), "ocr_text": "Figure",
     "ocr_seconds": 0.5, "error": None, "ocr_error": "tesseract timed out"},
]  # fmt: skip


def chunk(page, source, idx, cost, at):
    return {
        "chunk_id": uuid.UUID(int=page * 100 + idx + (50 if source == "ocr" else 0)),
        "page": page,
        "source": source,
        "idx": idx,
        "start_offset": 0,
        "end_offset": 5,
        "text": f"{page}-{source}-{idx}",
        "analysis": {"analyzer": "builtin/1", "cost_usd": cost},
        "cost_usd": cost,
        "analyzed_at": T0 + timedelta(seconds=at),
    }


CHUNKS = [
    chunk(1, "text-layer", 0, 0.1, 10),
    chunk(1, "text-layer", 1, 0.2, 11),
    chunk(2, "ocr", 0, 0.3, 12),
    chunk(3, "text-layer", 0, 0.0, 10),
    chunk(3, "ocr", 0, 0.0, 13),
]


def build(pages, chunks):
    finished = finished_at_of(JOB["started_at"], pages, chunks)
    return assemble_result(JOB, pages, chunks, status="completed", finished_at=finished)


def test_result_shape():
    result = build(PAGES, CHUNKS)
    assert result["text"] == "Hello\n\nScanned\n\nBoth\n\nFigure"
    assert result["pages"][0] == {"number": 1, "text": "Hello", "source": "text-layer"}
    assert result["pages"][1] == {"number": 2, "text": "Scanned", "source": "ocr"}
    assert result["pages"][2] == {
        "number": 3,
        "text": "Both",
        "source": "text-layer",
        "ocr_text": "Figure",
        "error": "tesseract timed out",
    }
    assert result["failed_pages"] == [{"page": 3, "reason": "tesseract timed out"}]
    assert [(c["page"], c["source"], c["index"]) for c in result["chunks"]] == [
        (1, "text-layer", 0),
        (1, "text-layer", 1),
        (2, "ocr", 0),
        (3, "text-layer", 0),
        (3, "ocr", 0),
    ]
    timings = result["timings"]
    assert timings["queued_seconds"] == 2.0
    assert timings["finished_at"] == (T0 + timedelta(seconds=13)).isoformat()
    assert timings["processing_seconds"] == 11.0
    assert timings["ocr_seconds"] == 1.75
    assert result["cost"] == {"total_usd": 0.6}
    assert result["partial"] is False and result["status"] == "completed"


def test_result_is_byte_identical_whatever_the_row_order():
    expected = result_json(build(PAGES, CHUNKS))
    rng = random.Random(7)
    for _ in range(20):
        pages, chunks = PAGES[:], CHUNKS[:]
        rng.shuffle(pages)
        rng.shuffle(chunks)
        assert result_json(build(pages, chunks)) == expected


def test_empty_document():
    job = {**JOB, "pages_total": 0}
    result = assemble_result(job, [], [], status="completed", finished_at=JOB["started_at"])
    assert result["text"] == "" and result["pages"] == [] and result["chunks"] == []
    assert result["timings"]["processing_seconds"] == 0.0
