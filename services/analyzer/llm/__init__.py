"""LLM analysis for docpipe: any OpenAI-compatible server, with a cost ledger, budgets that hold
before money is spent, shared rate limits, retries, cancellation and a per-tenant cache.

API (one engine per analyzer process; every process shares one PostgreSQL)::

    engine = LlmEngine(pool, LlmSettings())          # settings: DOCPIPE_LLM_* (settings.py)
    await engine.start()                              # clears a stale "misconfigured" flag
    job = JobAnalysisContext(job_id, tenant,
                             AnalysisOptions(tasks=("summary", "classify", "extract"),
                                             labels=("invoice", "letter"), schema={...}),
                             max_cost_usd=0.50, chunks_total=300,
                             is_cancelled=async_callable)
    outcomes = await engine.analyze_chunks(job, chunks)   # list[ChunkOutcome], chunk order
    summary = await engine.summarize_document(job)        # DocumentSummary (map-reduce)
    cost = await engine.job_cost(job_id)                  # JobCost: totals by task/model/outcome
    lines = await engine.usage(tenant_or_None, since)     # UsageLine per tenant, day and model
    engine.misconfigured                                  # {model: reason}, for /readyz
    await engine.refresh_misconfigured()                  # ... as every process sees it
    await engine.close()

What the caller gets per chunk and task (TaskResult.status):
- ok: the answer (summary text, label, or {field: {value, page, chunk_id, start, end}});
- failed: with a reason (context too long, answer unusable after one retry, model
  misconfigured); the chunk is not called again for that task;
- over_budget: no call was made; the reason is the sentence for the job, e.g. "The budget of
  $0.50 was reached after 212 of 300 chunks";
- cancelled: `is_cancelled` turned true (or the caller's task was cancelled); calls in flight
  were aborted and stay on the ledger at their reserved worst case.

analyze_chunks raises ModelUnavailable when a call still failed transiently (429, 5xx, timeout,
reset) after its retries; every other chunk's result is recorded first, so a redelivered
message calls only the chunks without a result. A result is written once (the first write wins)
and a redelivery makes no new call for it.

Wiring notes: `is_cancelled` is any async callable (e.g. a read of the job's status); the
metrics (docpipe_llm_*) are in metrics.py; the local model server is scripts/model_server.py
(install: scripts/install_model_server.sh). Decisions: docs/decisions/0600-llm-engine.md.
"""

from services.analyzer.llm.calls import ModelUnavailable
from services.analyzer.llm.engine import LlmEngine, budget_sentence
from services.analyzer.llm.models import (
    AnalysisOptions,
    CallOutcome,
    ChunkOutcome,
    DocumentSummary,
    JobAnalysisContext,
    JobCost,
    Task,
    TaskResult,
    TaskStatus,
    UsageLine,
)
from services.analyzer.llm.settings import LlmSettings, ModelLimits, ModelPrice

__all__ = [
    "AnalysisOptions",
    "CallOutcome",
    "ChunkOutcome",
    "DocumentSummary",
    "JobAnalysisContext",
    "JobCost",
    "LlmEngine",
    "LlmSettings",
    "ModelLimits",
    "ModelPrice",
    "ModelUnavailable",
    "Task",
    "TaskResult",
    "TaskStatus",
    "UsageLine",
    "budget_sentence",
]
