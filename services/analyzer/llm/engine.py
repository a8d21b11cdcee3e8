"""The engine: analyse a job's chunks by its tasks, reduce a document summary, report spend."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.analyzer.llm import metrics
from services.analyzer.llm.calls import CallResult, ModelCaller, ModelUnavailable
from services.analyzer.llm.client import ModelClient
from services.analyzer.llm.ledger import CallRow, Ledger
from services.analyzer.llm.limiter import ModelState
from services.analyzer.llm.models import (
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
from services.analyzer.llm.settings import LlmSettings
from services.analyzer.llm.tasks import (
    TaskRequest,
    build_request,
    parse_answer,
    reduce_groups,
    reduce_request,
    retry_request,
    with_provenance,
)
from shared.events import Chunk

DOCUMENT_NAMESPACE = uuid.UUID("0b8f5f7e-2f4e-4c55-9d6a-3c1f8a7d9e20")


def document_target_id(job_id: uuid.UUID, name: str) -> uuid.UUID:
    """The chunk id a document-level call is recorded under ("document", "reduce:0:3")."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"{job_id}/{name}")


@dataclass(frozen=True)
class Target:
    """What a call's result belongs to: a chunk, or a document-level step (chunk is None)."""

    chunk_id: uuid.UUID
    chunk: Chunk | None = None


@dataclass(frozen=True)
class Solved:
    status: TaskStatus
    value: Any = None
    reason: str | None = None
    cost_usd: float = 0.0
    from_cache: bool = False


def budget_sentence(label: str, limit_usd: float, analysed: int, total: int | None) -> str:
    """'The budget of $0.50 was reached after 212 of 300 chunks'."""
    of_total = f" of {total}" if total is not None else ""
    # Cents, unless the budget is smaller than a cent: "$0.005", not "$0.01".
    amount = f"{limit_usd:.2f}" if limit_usd >= 0.01 or limit_usd == 0 else f"{limit_usd:.6g}"
    return f"{label} of ${amount} was reached after {analysed}{of_total} chunks"


class LlmEngine:
    """See the package docstring for the API. One per analyzer process; any number of
    processes share one database (ledger, budgets, limits, cache)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: LlmSettings | None = None,
        client: ModelClient | None = None,
    ) -> None:
        self.settings = settings or LlmSettings()
        self.ledger = Ledger(pool)
        self.client = client or ModelClient(self.settings)
        self.models = ModelState(pool, self.settings.rate_window_seconds)
        self.caller = ModelCaller(self.ledger, self.models, self.client, self.settings)

    async def start(self) -> None:
        """A start with (possibly fixed) settings clears the deployment model's misconfigured
        flag; the first call tells again if the key is still refused."""
        await self.models.clear_misconfigured(self.settings.model)
        self.caller.misconfigured.clear()
        metrics.LLM_MISCONFIGURED.labels(model=self.settings.model).set(0)
        metrics.set_tenant_budgets(
            self.settings.tenant_daily_budget_usd, self.settings.tenant_monthly_budget_usd
        )

    async def close(self) -> None:
        await self.client.close()

    @property
    def misconfigured(self) -> dict[str, str]:
        """Models this process stopped calling, with the reason (for /readyz)."""
        return dict(self.caller.misconfigured)

    async def refresh_misconfigured(self) -> dict[str, str]:
        """The flags every process shares (a /readyz of a process that has not called yet)."""
        for model, reason in (await self.models.misconfigured_models()).items():
            self.caller.note_misconfigured(model, reason)
        return self.misconfigured

    async def job_cost(self, job_id: uuid.UUID) -> JobCost:
        return await self.ledger.job_cost(job_id)

    async def usage(self, tenant: str | None, since: datetime) -> list[UsageLine]:
        return await self.ledger.usage(tenant, since)

    # --- chunks -----------------------------------------------------------------------------

    async def analyze_chunks(
        self, job: JobAnalysisContext, chunks: Sequence[Chunk]
    ) -> list[ChunkOutcome]:
        """Every chunk by every task of the job, calls overlapping (bounded per process).

        A chunk that already has a result is not called again. Raises ModelUnavailable when a
        call kept failing transiently, after every other chunk's result is recorded.
        """
        work = [(chunk, task) for chunk in chunks for task in job.options.tasks]
        # Twice the calls in flight start at once: the next ones' reads overlap the calls, and
        # a long message's reads never queue for the pool ahead of the calls' reservations.
        started = asyncio.Semaphore(2 * self.settings.concurrency)

        async def gated(chunk: Chunk, task: Task) -> TaskResult:
            async with started:
                return await self._chunk_task(job, chunk, task)

        running = [asyncio.create_task(gated(c, t)) for c, t in work]
        watcher = (
            asyncio.create_task(self._watch_cancel(job, running)) if job.is_cancelled else None
        )
        try:
            done = await asyncio.gather(*running, return_exceptions=True)
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        outcomes = {
            c.chunk_id: ChunkOutcome(chunk_id=c.chunk_id, page=c.page, results={}) for c in chunks
        }
        unavailable: ModelUnavailable | None = None
        for (chunk, task), result in zip(work, done, strict=True):
            if isinstance(result, asyncio.CancelledError):
                result = TaskResult(
                    task=task, status=TaskStatus.CANCELLED, reason="The job was cancelled"
                )
            elif isinstance(result, ModelUnavailable):
                unavailable = result
                continue
            elif isinstance(result, BaseException):
                raise result
            outcomes[chunk.chunk_id].results[task] = result
        if unavailable is not None:
            raise unavailable
        return list(outcomes.values())

    async def _watch_cancel(
        self, job: JobAnalysisContext, running: list[asyncio.Task[Any]]
    ) -> None:
        assert job.is_cancelled is not None
        while not all(t.done() for t in running):
            if await job.is_cancelled():
                for task in running:
                    task.cancel()
                return
            await asyncio.sleep(self.settings.cancel_poll_seconds)

    async def _chunk_task(self, job: JobAnalysisContext, chunk: Chunk, task: Task) -> TaskResult:
        request = build_request(task, chunk.text, job.options, self.settings)
        solved = await self._solve(job, Target(chunk.chunk_id, chunk), request)
        return TaskResult(
            task=task,
            status=solved.status,
            value=solved.value,
            reason=solved.reason,
            cost_usd=solved.cost_usd,
            from_cache=solved.from_cache,
        )

    # --- one result: stored, cached, or called ---------------------------------------------

    async def _solve(self, job: JobAnalysisContext, target: Target, request: TaskRequest) -> Solved:
        stored = await self.ledger.result(job.job_id, target.chunk_id, request.task)
        if stored is not None:
            return _from_stored(stored)
        model = job.options.model or self.settings.model
        key = request.cache_key(model)
        cached = await self.ledger.cached_answer(job.tenant, key)
        if cached is not None:
            return await self._reuse(job, target, request, model, cached)
        solved, answer = await self._ask(job, target, request, model)
        if solved.status is TaskStatus.OK:
            return await self._save(job, target, request, model, solved, cache=(key, answer))
        if solved.status is TaskStatus.FAILED and model not in self.misconfigured:
            return await self._save(job, target, request, model, solved)
        return solved

    async def _reuse(
        self, job: JobAnalysisContext, target: Target, request: TaskRequest, model: str, answer: Any
    ) -> Solved:
        attempt = await self.ledger.next_attempt(job.job_id, target.chunk_id, request.task)
        row = _call_row(job, target, request, model, attempt)
        await self.ledger.record(row, CallOutcome.CACHE_HIT)
        value = _placed(request.task, answer, target)
        solved = Solved(TaskStatus.OK, value=value, from_cache=True)
        return await self._save(job, target, request, model, solved)

    async def _ask(
        self, job: JobAnalysisContext, target: Target, request: TaskRequest, model: str
    ) -> tuple[Solved, Any]:
        """Call, parse; an extract answer that does not match its schema is asked once more
        with the validation error. Returns the result and the raw parsed answer (to cache)."""
        result = await self.caller.call(job, target.chunk_id, request, model)
        spent = result.cost_usd
        if result.status is not TaskStatus.OK:
            return await self._unanswered(job, result, spent), None
        assert result.answer is not None and result.call_id is not None
        parsed = parse_answer(request.task, result.answer.text, job.options)
        if parsed.error is not None and request.task == Task.EXTRACT:
            await self.ledger.relabel(result.call_id, CallOutcome.RETRIED, parsed.error)
            retry = retry_request(request, result.answer.text, parsed.error)
            result = await self.caller.call(job, target.chunk_id, retry, model)
            spent += result.cost_usd
            if result.status is not TaskStatus.OK:
                return await self._unanswered(job, result, spent), None
            assert result.answer is not None and result.call_id is not None
            parsed = parse_answer(request.task, result.answer.text, job.options)
        if parsed.error is not None:
            assert result.call_id is not None
            await self.ledger.relabel(result.call_id, CallOutcome.FAILED, parsed.error)
            reason = f"The model's answer was not usable: {parsed.error}"
            return Solved(TaskStatus.FAILED, reason=reason, cost_usd=spent), None
        value = _placed(request.task, parsed.value, target)
        return Solved(TaskStatus.OK, value=value, cost_usd=spent), parsed.value

    async def _unanswered(
        self, job: JobAnalysisContext, result: CallResult, spent: float
    ) -> Solved:
        reason = result.reason
        if result.refused_by is not None:
            analysed = await self.ledger.chunks_analysed(job.job_id)
            scope = result.refused_by
            reason = budget_sentence(scope.label, scope.limit_usd, analysed, job.chunks_total)
        return Solved(result.status, reason=reason, cost_usd=spent)

    async def _save(
        self,
        job: JobAnalysisContext,
        target: Target,
        request: TaskRequest,
        model: str,
        solved: Solved,
        cache: tuple[str, Any] | None = None,
    ) -> Solved:
        row = _call_row(job, target, request, model, attempt=0)
        chunk = target.chunk
        stored = await self.ledger.save_result(
            row,
            status=str(solved.status),
            result=solved.value,
            reason=solved.reason,
            cost_usd=solved.cost_usd,
            page=chunk.page if chunk else None,
            chunk_index=chunk.index if chunk else None,
            cache=cache,
        )
        first = _from_stored(stored)
        return Solved(first.status, first.value, first.reason, first.cost_usd, solved.from_cache)

    # --- the document summary (map-reduce) ----------------------------------------------------

    async def summarize_document(self, job: JobAnalysisContext) -> DocumentSummary:
        """The document's summary, reduced from its chunk summaries in groups that fit the
        model's context (each level's groups called at once). Deterministic ids per group, so
        a repeated call reuses every step already done."""
        rows = await self.ledger.chunk_results(job.job_id, Task.SUMMARY)
        summaries = [r["result"] for r in rows if r["status"] == TaskStatus.OK]
        if not summaries:
            return DocumentSummary(status=TaskStatus.FAILED, reason="No chunk has a summary")
        level = 0
        while True:
            groups = reduce_groups(summaries, self.settings.reduce_group_chars)
            last = len(groups) == 1
            steps = [
                self._solve(
                    job,
                    Target(
                        document_target_id(
                            job.job_id, "document" if last else f"reduce:{level}:{i}"
                        )
                    ),
                    _document_request(group, self.settings, last),
                )
                for i, group in enumerate(groups)
            ]
            solved = await asyncio.gather(*steps)
            failed = next((s for s in solved if s.status is not TaskStatus.OK), None)
            if failed is not None:
                return DocumentSummary(
                    status=failed.status, reason=failed.reason, chunks_summarised=len(rows)
                )
            if last:
                return DocumentSummary(
                    status=TaskStatus.OK, summary=solved[0].value, chunks_summarised=len(summaries)
                )
            summaries = [s.value for s in solved]
            level += 1


def _document_request(group: list[str], settings: LlmSettings, last: bool) -> TaskRequest:
    request = reduce_request(group, settings)
    if last:
        return request
    return TaskRequest("summary_reduce", request.prompt, request.messages, request.max_tokens)


def _call_row(
    job: JobAnalysisContext, target: Target, request: TaskRequest, model: str, attempt: int
) -> CallRow:
    """The ledger row of one task on one target."""
    return CallRow(
        job_id=job.job_id,
        tenant=job.tenant,
        task=request.task,
        chunk_id=target.chunk_id,
        attempt=attempt,
        model=model,
        prompt_version=request.prompt_version,
    )


def _placed(task: str, value: Any, target: Target) -> Any:
    """An extract answer gets each field's page, chunk and offsets; others stay as they are."""
    if task == Task.EXTRACT and target.chunk is not None and isinstance(value, dict):
        return with_provenance(value, target.chunk)
    return value


def _from_stored(stored: Any) -> Solved:
    return Solved(
        TaskStatus(stored["status"]),
        value=stored["result"],
        reason=stored["reason"],
        cost_usd=float(stored["cost_usd"]),
    )
