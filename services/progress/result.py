"""A job's result: the scalar head assembled here (pure), the text, pages and chunks assembled
by PostgreSQL from the stored rows (services/progress/store/items.py, insert_results).

The bulk stays in the database: a long document's result is its text three times over (the
whole text, each page's, each chunk's) plus every chunk's analysis, and building that in this
process took hundreds of MB for one 19 MB text (docs/decisions/0990). Every timestamp comes
from the events (first seen) and every list is ordered in SQL, so the same events in any order
give the same result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.events import JobStatus


@dataclass(frozen=True)
class ItemTotals:
    """What the head of a result needs from a job's page and chunk rows (one aggregate row)."""

    last_at: datetime | None = None  # the latest extracted_at, ocred_at or analyzed_at
    ocr_seconds: float = 0.0
    cost_usd: float = 0.0
    chunks: int = 0


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


def result_head(
    job: Mapping[str, Any],
    totals: ItemTotals,
    *,
    status: JobStatus,
    finished_at: datetime | None,
    partial: bool = False,
) -> dict[str, Any]:
    """Everything of the result but `text`, `pages`, `chunks` and `failed_pages` (which the
    database adds). `job` needs job_id, filename, format, pages_total, created_at and
    started_at (document_metadata if known)."""
    created_at, started_at = job.get("created_at"), job.get("started_at")
    return {
        "job_id": str(job["job_id"]),
        "status": status,
        "filename": job.get("filename"),
        "format": job.get("format"),
        "pages_total": job.get("pages_total"),
        "metadata": document_metadata(job),
        "timings": {
            "created_at": _iso(created_at),
            "started_at": _iso(started_at),
            "finished_at": _iso(finished_at),
            "queued_seconds": _seconds(created_at, started_at),
            "processing_seconds": _seconds(started_at, finished_at),
            "ocr_seconds": round(totals.ocr_seconds, 3),
        },
        "cost": {"total_usd": round(totals.cost_usd, 6)},
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


def finished_at_of(started_at: datetime | None, totals: ItemTotals) -> datetime | None:
    """When the last piece of work happened, by the events' own clocks: independent of the
    order events were applied in, so the result stays deterministic."""
    known = [s for s in (started_at, totals.last_at) if s is not None]
    return max(known) if known else None
