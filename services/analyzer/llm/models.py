"""The engine's vocabulary: what a job asks for, and what each chunk and call came to."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from shared.analysis import AnalysisOptions as AnalysisOptions
from shared.analysis import AnalysisTask

# The job's task names and options are the bus contract's (shared.events).
Task = AnalysisTask


# The ledger's task name for the document summary (reduced from the chunk summaries).
DOCUMENT_SUMMARY = "summary_document"


class CallOutcome(StrEnum):
    """A ledger row's outcome. RESERVED: written before the call, not settled (yet)."""

    RESERVED = "reserved"
    OK = "ok"
    RETRIED = "retried"
    FAILED = "failed"
    CACHE_HIT = "cache_hit"
    CANCELLED = "cancelled"
    OVER_BUDGET = "over_budget"


class TaskStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # with a reason; the chunk is not called again for this task
    OVER_BUDGET = "over_budget"  # not analysed: a budget had no room for the call
    CANCELLED = "cancelled"  # not analysed: the job was cancelled


@dataclass(frozen=True)
class JobAnalysisContext:
    """One job as the engine sees it. `chunks_total` (when known) lets a budget sentence say
    "after 212 of 300 chunks"; `is_cancelled` is polled while the job's calls run."""

    job_id: uuid.UUID
    tenant: str
    options: AnalysisOptions = AnalysisOptions()
    max_cost_usd: float | None = None
    chunks_total: int | None = None
    is_cancelled: Callable[[], Awaitable[bool]] | None = None


class ExtractedValue(BaseModel):
    """One extracted field and where it came from (offsets index the page's text, like the
    chunk's; None when the value is not found verbatim in the chunk)."""

    value: Any
    page: int
    chunk_id: uuid.UUID
    start: int | None = None
    end: int | None = None


class TaskResult(BaseModel):
    task: Task
    status: TaskStatus
    # summary: str; classify: the label; extract: {field: ExtractedValue}
    value: Any = None
    reason: str | None = None
    cost_usd: float = 0.0
    from_cache: bool = False


class ChunkOutcome(BaseModel):
    chunk_id: uuid.UUID
    page: int
    results: dict[Task, TaskResult]

    @property
    def analysed(self) -> bool:
        """Every task has an answer or a recorded failure (nothing left to spend on)."""
        return all(r.status in (TaskStatus.OK, TaskStatus.FAILED) for r in self.results.values())

    @property
    def cost_usd(self) -> float:
        return sum(r.cost_usd for r in self.results.values())


class DocumentSummary(BaseModel):
    status: TaskStatus
    summary: str | None = None
    reason: str | None = None
    chunks_summarised: int = 0


class CostLine(BaseModel):
    """Spend of one group (a task, a model, a tenant and day...)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0


class JobCost(CostLine):
    job_id: uuid.UUID
    by_task: dict[str, CostLine] = Field(default_factory=dict)
    by_model: dict[str, CostLine] = Field(default_factory=dict)
    by_outcome: dict[str, int] = Field(default_factory=dict)


class UsageLine(CostLine):
    tenant: str
    day: date
    model: str
