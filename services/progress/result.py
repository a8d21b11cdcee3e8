"""Assemble a job's result from its stored rows. Pure and deterministic: rows are sorted here
and every timestamp comes from the events (first seen), so the same events in any order give
byte-identical JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from shared.events import JobStatus, PageSource

TEXT_LAYER = PageSource.TEXT_LAYER.value
OCR = PageSource.OCR.value
SOURCE_ORDER = {TEXT_LAYER: 0, OCR: 1}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def page_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    """One page: its text layer if it has one (OCR text alongside), else its OCR text."""
    text = row.get("text") or ""
    ocr_text = row.get("ocr_text") or ""
    has_layer = bool(row.get("has_text_layer")) or bool(text)
    ocred = row.get("ocred_at") is not None
    entry: dict[str, Any] = {"number": row["page"]}
    if has_layer:
        entry["text"] = text
        entry["source"] = TEXT_LAYER
        if ocr_text:
            entry["ocr_text"] = ocr_text
    elif ocred or row.get("ocr_pending"):
        entry["text"] = ocr_text
        entry["source"] = OCR
    else:
        entry["text"] = text
        entry["source"] = TEXT_LAYER
    confidence = row.get("ocr_confidence")
    if confidence is not None:  # the OCR text's mean word confidence, 0-100
        entry["ocr_confidence"] = round(float(confidence), 1)
    error = page_error(row)
    if error:
        entry["error"] = error
    headings = row.get("headings")
    if headings:
        entry["headings"] = json.loads(headings) if isinstance(headings, str) else headings
    return entry


def page_error(row: Mapping[str, Any]) -> str | None:
    errors = [e for e in (row.get("error"), row.get("ocr_error")) if e]
    return "; ".join(errors) if errors else None


def full_text(pages: Iterable[dict[str, Any]]) -> str:
    parts: list[str] = []
    for page in pages:
        parts += [t for t in (page["text"], page.get("ocr_text")) if t]
    return "\n\n".join(parts)


def chunk_entry(row: Mapping[str, Any]) -> dict[str, Any]:
    analysis = row["analysis"]
    if isinstance(analysis, str):
        analysis = json.loads(analysis)
    return {
        "chunk_id": str(row["chunk_id"]),
        "page": row["page"],
        "source": row["source"],
        "index": row["idx"],
        "start": row["start_offset"],
        "end": row["end_offset"],
        "text": row["text"],
        "analysis": analysis,
    }


def assemble_result(
    job: Mapping[str, Any],
    pages: Iterable[Mapping[str, Any]],
    chunks: Iterable[Mapping[str, Any]],
    *,
    status: JobStatus,
    finished_at: datetime | None,
    partial: bool = False,
) -> dict[str, Any]:
    """The result document. `job` needs job_id, filename, format, pages_total, created_at and
    started_at (document_metadata if known); `pages` are job_pages rows; `chunks` are
    job_chunks rows."""
    page_rows = sorted(pages, key=lambda r: r["page"])
    chunk_rows = sorted(
        chunks, key=lambda r: (r["page"], SOURCE_ORDER.get(r["source"], 9), r["idx"])
    )
    page_list = [page_entry(r) for r in page_rows]
    created_at, started_at = job.get("created_at"), job.get("started_at")
    ocr_seconds = sum(float(r.get("ocr_seconds") or 0.0) for r in page_rows)
    cost = sum(float(r.get("cost_usd") or 0.0) for r in chunk_rows)
    return {
        "job_id": str(job["job_id"]),
        "status": status,
        "filename": job.get("filename"),
        "format": job.get("format"),
        "pages_total": job.get("pages_total"),
        "metadata": document_metadata(job),
        "text": full_text(page_list),
        "pages": page_list,
        "chunks": [chunk_entry(r) for r in chunk_rows],
        "failed_pages": [
            {"page": r["page"], "reason": page_error(r)} for r in page_rows if page_error(r)
        ],
        "timings": {
            "created_at": _iso(created_at),
            "started_at": _iso(started_at),
            "finished_at": _iso(finished_at),
            "queued_seconds": _seconds(created_at, started_at),
            "processing_seconds": _seconds(started_at, finished_at),
            "ocr_seconds": round(ocr_seconds, 3),
        },
        "cost": {"total_usd": round(cost, 6)},
        "partial": partial,
    }


METADATA_FIELDS = (
    "title",
    "author",
    "subject",
    "created",
    "modified",
    "language",
    "producer",
    "page_count",
)


def document_metadata(job: Mapping[str, Any]) -> dict[str, Any]:
    """The result's `metadata`: every field present (null when the document does not say),
    page_count falling back to the pages extracted."""
    stored = job.get("document_metadata")
    if isinstance(stored, str):
        stored = json.loads(stored)
    known = dict(stored or {})
    metadata = {name: known.get(name) for name in METADATA_FIELDS}
    if metadata["page_count"] is None:
        metadata["page_count"] = job.get("pages_total")
    return metadata


def finished_at_of(
    started_at: datetime | None,
    pages: Iterable[Mapping[str, Any]],
    chunks: Iterable[Mapping[str, Any]],
) -> datetime | None:
    """When the last piece of work happened, by the events' own clocks: independent of the
    order events were applied in, so the result stays deterministic."""
    stamps = [started_at]
    for r in pages:
        stamps += [r.get("extracted_at"), r.get("ocred_at")]
    stamps += [r.get("analyzed_at") for r in chunks]
    known = [s for s in stamps if s is not None]
    return max(known) if known else None


def result_json(result: Mapping[str, Any]) -> str:
    """Canonical JSON text of a result (sorted keys, no whitespace)."""
    return json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
