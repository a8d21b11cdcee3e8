"""What the analyzer needs to know about a job beyond its page events: its tenant and analysis
options (from the job row, kept per job: they never change), whether it was cancelled, and how
many chunks it has once that is known."""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.analysis import AnalysisOptions
from shared.events import TERMINAL_STATUSES


@dataclass(frozen=True)
class JobAnalysis:
    tenant: str
    options: AnalysisOptions | None  # None: the deployment's default backend

    @property
    def uses_llm(self) -> bool:
        return self.options is not None and self.options.uses_llm


def options_from_row(value: Any) -> AnalysisOptions | None:
    """The stored options (jsonb, which asyncpg returns as text) as the contract's model."""
    if value is None:
        return None
    data = json.loads(value) if isinstance(value, str) else value
    return AnalysisOptions.model_validate(data)


class JobDirectory:
    """Per-job facts read from the database; the options are cached (least recently used
    first out), the rest is asked each time (it changes while the job runs)."""

    def __init__(self, pool: asyncpg.Pool, capacity: int = 1000) -> None:
        self.pool = pool
        self.capacity = capacity
        self._known: OrderedDict[uuid.UUID, JobAnalysis] = OrderedDict()

    async def analysis_of(self, job_id: uuid.UUID) -> JobAnalysis | None:
        """None when the job row does not exist."""
        known = self._known.get(job_id)
        if known is not None:
            self._known.move_to_end(job_id)
            return known
        row = await self.pool.fetchrow(
            "SELECT tenant, analysis FROM jobs WHERE job_id = $1", job_id
        )
        if row is None:
            return None
        found = JobAnalysis(row["tenant"], options_from_row(row["analysis"]))
        self._known[job_id] = found
        if len(self._known) > self.capacity:
            self._known.popitem(last=False)
        return found

    async def is_cancelled(self, job_id: uuid.UUID) -> bool:
        """The job ended, or a cancel was requested (progress applies it moments later)."""
        row = await self.pool.fetchrow(
            "SELECT status, cancel_requested_at FROM jobs WHERE job_id = $1", job_id
        )
        if row is None:
            return True
        return row["cancel_requested_at"] is not None or row["status"] in TERMINAL_STATUSES

    async def chunks_total(self, job_id: uuid.UUID) -> int | None:
        """How many chunks the job has, once every page is extracted and every OCR done."""
        row = await self.pool.fetchrow(_CHUNKS_TOTAL, job_id)
        if row is None or row["pages_total"] is None:
            return None
        if row["pages_done"] < row["pages_total"] or row["ocr_done"] < row["ocr_total"]:
            return None
        return int(row["chunks"])


_CHUNKS_TOTAL = """
SELECT j.pages_total,
       coalesce(max(p.done) FILTER (WHERE p.stage = 'extract'), 0) AS pages_done,
       coalesce(max(p.total) FILTER (WHERE p.stage = 'ocr'), 0) AS ocr_total,
       coalesce(max(p.done) FILTER (WHERE p.stage = 'ocr'), 0) AS ocr_done,
       coalesce(max(p.total) FILTER (WHERE p.stage = 'analyze'), 0) AS chunks
FROM jobs j LEFT JOIN job_progress p ON p.job_id = j.job_id
WHERE j.job_id = $1
GROUP BY j.job_id
"""
