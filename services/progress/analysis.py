"""AI analysis as progress sees it: the tokens and cost each window's first-written chunks
add to their jobs, the budget sentence that makes a job partial, the document summary a job
waits for before it completes (document.summarize, answered by document.summarized), and the
result's analysis section. Pure: the store and lifecycle call these with what they read."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.progress.transitions import JobState, note_partial
from shared.analysis import AnalysisOptions, LlmTaskStatus
from shared.events import Analysis, DocumentSummarize


@dataclass
class JobSpend:
    """What a window's first-written chunks of one job took, and the first sentence of a
    chunk the budget had no room for."""

    tokens: int = 0
    cost_usd: float = 0.0
    note: str | None = None


Spend = dict[uuid.UUID, JobSpend]


def add_spend(spend: Spend, job_id: uuid.UUID, analysis: Analysis) -> None:
    job = spend.get(job_id)
    if job is None:
        job = spend[job_id] = JobSpend()
    job.tokens += analysis.tokens
    job.cost_usd += analysis.cost_usd
    if job.note is None and analysis.llm:
        job.note = next(
            (r.reason for r in analysis.llm.values() if r.status == LlmTaskStatus.OVER_BUDGET),
            None,
        )


def apply_spend(state: JobState, job: JobSpend) -> None:
    state.tokens += job.tokens
    state.cost_usd += job.cost_usd
    if job.note is not None:
        note_partial(state, job.note)


def options_of(row: Mapping[str, Any]) -> AnalysisOptions | None:
    value = row.get("analysis")
    if value is None:
        return None
    return AnalysisOptions.model_validate(json.loads(value) if isinstance(value, str) else value)


def awaits_summary(row: Mapping[str, Any], state: JobState) -> bool:
    """The job asked for a summary and its document summary has not come yet: it may not
    complete, even with every chunk analysed."""
    if state.document_summary is not None:
        return False
    options = options_of(row)
    return options is not None and options.wants_document_summary


def summary_request(row: Mapping[str, Any], state: JobState) -> DocumentSummarize | None:
    """The document.summarize to publish (once: a redelivered or repeated window finds it
    requested), or None."""
    if state.summary_requested:
        return None
    state.summary_requested = True
    return DocumentSummarize(job_id=row["job_id"], tenant=row["tenant"])


def analysis_section(row: Mapping[str, Any], state: JobState) -> dict[str, Any] | None:
    """The result's `analysis`: backend and tasks, the document summary, and the spend; None
    for a job without AI analysis (its result is as before)."""
    options = options_of(row)
    if options is None or not options.uses_llm:
        return None
    return {
        "backend": options.backend.value,
        "tasks": [t.value for t in options.tasks],
        "model": options.model,
        "max_cost_usd": options.max_cost_usd,
        "document_summary": state.document_summary,
        "tokens": state.tokens,
        "cost_usd": round(state.cost_usd, 10),
        "note": state.error if state.partial else None,
    }
