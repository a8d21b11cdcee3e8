"""A job's LLM analysis inside the analyzer service: the engine's outcomes merged into the
chunks' analyses (beside the built-in fields), and the document summary (map-reduce) answered
for progress. Thin: the engine does the work, this translates between it and the bus."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from services.analyzer.jobs import JobAnalysis, JobDirectory
from services.analyzer.llm import ChunkOutcome, JobAnalysisContext, LlmEngine, TaskStatus
from services.analyzer.llm.models import DOCUMENT_SUMMARY
from shared.analysis import AnalysisOptions, AnalysisTask, LlmTaskResult, LlmTaskStatus
from shared.errors import JobGone
from shared.events import Analysis, Chunk, DocumentSummarize, DocumentSummarized

# The ledger's task names of the document summary's calls (engine.summarize_document).
DOCUMENT_TASKS = [DOCUMENT_SUMMARY, "summary_reduce"]


class LlmStage:
    def __init__(self, engine: LlmEngine, jobs: JobDirectory) -> None:
        self.engine = engine
        self.jobs = jobs
        self._start_lock = asyncio.Lock()
        self._started = False

    async def started(self) -> None:
        """Start the engine once per process: a start clears the deployment model's stale
        "misconfigured" flag, so new settings get one call to prove themselves."""
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.engine.start()
                self._started = True

    async def context(
        self, job_id: uuid.UUID, job: JobAnalysis, *, chunks_total: bool = True
    ) -> JobAnalysisContext:
        options = job.options or AnalysisOptions()

        async def is_cancelled() -> bool:
            return await self.jobs.is_cancelled(job_id)

        return JobAnalysisContext(
            job_id=job_id,
            tenant=job.tenant,
            options=options,
            max_cost_usd=options.max_cost_usd,
            chunks_total=await self.jobs.chunks_total(job_id) if chunks_total else None,
            is_cancelled=is_cancelled,
        )

    async def analyze(
        self,
        job_id: uuid.UUID,
        job: JobAnalysis,
        chunks: Sequence[Chunk],
        builtin: Sequence[Analysis],
    ) -> list[Analysis]:
        """The chunks' built-in analyses with the LLM's results, tokens and cost added.

        Raises ModelUnavailable (transient: the bus retries; chunks with a result are not
        called again) and JobGone when the job was cancelled while its calls ran."""
        await self.started()
        context = await self.context(job_id, job)
        outcomes = await self.engine.analyze_chunks(context, chunks)
        if any(r.status is TaskStatus.CANCELLED for o in outcomes for r in o.results.values()):
            raise JobGone("the job was cancelled while its chunks were analysed")
        spend = await self.engine.ledger.spend_by_chunk(job_id, [c.chunk_id for c in chunks])
        return [
            with_llm(analysis, outcome, spend.get(outcome.chunk_id, (0, 0.0)))
            for analysis, outcome in zip(builtin, outcomes, strict=True)
        ]

    async def summarize(self, event: DocumentSummarize) -> DocumentSummarized:
        """The document's summary from its chunk summaries; a repeat reuses every step."""
        job = await self.jobs.analysis_of(event.job_id)
        if job is None:
            raise JobGone("the job does not exist")
        await self.started()
        context = await self.context(event.job_id, job, chunks_total=False)
        summary = await self.engine.summarize_document(context)
        if summary.status is TaskStatus.CANCELLED:
            raise JobGone("the job was cancelled while its summary was made")
        tokens, cost = await self.engine.ledger.spend_of_tasks(event.job_id, DOCUMENT_TASKS)
        return DocumentSummarized(
            job_id=event.job_id,
            status=LlmTaskStatus(summary.status.value),
            summary=summary.summary,
            reason=summary.reason,
            cost_usd=cost,
            tokens=tokens,
            chunks_summarised=summary.chunks_summarised,
        )


def with_llm(analysis: Analysis, outcome: ChunkOutcome, spend: tuple[int, float]) -> Analysis:
    """One chunk's analysis with its LLM results, and what its calls took (the ledger's
    figures: retries and calls whose answer was lost included)."""
    tokens, cost = spend
    results = {
        AnalysisTask(task.value): LlmTaskResult(
            status=LlmTaskStatus(r.status.value),
            value=r.value,
            reason=r.reason,
            cost_usd=r.cost_usd,
            from_cache=r.from_cache,
        )
        for task, r in outcome.results.items()
    }
    return analysis.model_copy(update={"llm": results, "tokens": tokens, "cost_usd": cost})
