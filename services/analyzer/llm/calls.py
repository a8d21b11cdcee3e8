"""One model call under docpipe's policy: reserve the worst case on the ledger and in every
budget, wait for the model's shared rate limits, call with a bounded number in flight, settle
to the server's usage; retry transient failures with jittered backoff honouring Retry-After.

Each attempt is its own ledger row, written before the request is sent. What a failed attempt
costs: nothing when the server answered with an error (it did no work), its reserved worst case
when no answer came (timeout, reset, cancel): the server may have done and billed the work.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from services.analyzer.llm import metrics
from services.analyzer.llm.client import (
    Answer,
    CallFailure,
    FailureKind,
    ModelClient,
    classify_failure,
)
from services.analyzer.llm.ledger import (
    AttemptTaken,
    BudgetScope,
    CallRow,
    Ledger,
    Settlement,
    budget_scopes,
)
from services.analyzer.llm.limiter import ModelState
from services.analyzer.llm.models import CallOutcome, JobAnalysisContext, TaskStatus
from services.analyzer.llm.reservations import ReservationBatcher
from services.analyzer.llm.settings import LlmSettings
from services.analyzer.llm.tasks import TaskRequest

# How long one wait for a rate limit or a slowed model sleeps before asking again.
MAX_ADMISSION_SLEEP = 2.0


@dataclass(frozen=True)
class CallResult:
    status: TaskStatus
    answer: Answer | None = None
    call_id: uuid.UUID | None = None
    reason: str | None = None
    cost_usd: float = 0.0
    refused_by: BudgetScope | None = None


class TransientFailure(Exception):
    """A retryable failure (tenacity retries it; after the last attempt it leaves the engine
    as ModelUnavailable, so the bus redelivers the message later)."""

    def __init__(self, failure: CallFailure) -> None:
        super().__init__(failure.reason)
        self.failure = failure


class ModelUnavailable(Exception):
    """The model kept failing transiently: the message should be retried later (only the
    chunks without a result will call again)."""


class ModelCaller:
    def __init__(
        self, ledger: Ledger, models: ModelState, client: ModelClient, settings: LlmSettings
    ) -> None:
        self.ledger = ledger
        self.models = models
        self.client = client
        self.settings = settings
        self.in_flight = asyncio.Semaphore(settings.concurrency)
        # Calls reserving at the same moment share one durable commit.
        self.reservations = ReservationBatcher(ledger)
        # Models whose server refused the key, with the reason (shared through llm_models).
        self.misconfigured: dict[str, str] = {}
        self._jitter = wait_random_exponential(
            multiplier=settings.backoff_initial_seconds, max=settings.backoff_max_seconds
        )

    def _wait(self, state: RetryCallState) -> float:
        delay = float(self._jitter(state))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, TransientFailure) and error.failure.retry_after is not None:
            delay = max(delay, error.failure.retry_after)
        return delay

    async def call(
        self, job: JobAnalysisContext, chunk_id: uuid.UUID, request: TaskRequest, model: str
    ) -> CallResult:
        """Call until an answer, a permanent failure, a refusal or the last transient failure
        (raised as ModelUnavailable)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(TransientFailure),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    final = attempt.retry_state.attempt_number >= self.settings.max_attempts
                    return await self._attempt(job, chunk_id, request, model, final=final)
        except TransientFailure as exc:
            raise ModelUnavailable(exc.failure.reason) from exc
        raise AssertionError("unreachable: tenacity returns or raises")

    async def _reserve(
        self, job: JobAnalysisContext, chunk_id: uuid.UUID, request: TaskRequest, model: str
    ) -> tuple[CallRow, BudgetScope | None]:
        price = self.settings.price(model)
        prompt_tokens = await self.client.count_prompt_tokens(request.messages)
        scopes = budget_scopes(
            job.job_id,
            job.tenant,
            job.max_cost_usd,
            self.settings.tenant_daily_budget_usd,
            self.settings.tenant_monthly_budget_usd,
        )
        for _ in range(5):
            row = CallRow(
                job_id=job.job_id,
                tenant=job.tenant,
                task=request.task,
                chunk_id=chunk_id,
                attempt=await self.ledger.next_attempt(job.job_id, chunk_id, request.task),
                model=model,
                prompt_version=request.prompt_version,
                reserved_tokens=prompt_tokens + request.max_tokens,
                reserved_usd=price.cost_usd(prompt_tokens, request.max_tokens),
                budget_scopes=scopes,
            )
            try:
                return row, await self.reservations.reserve(row)
            except AttemptTaken:
                continue  # another process wrote this attempt first: take the next number
        raise RuntimeError(f"could not reserve a ledger row for {request.task} of {chunk_id}")

    async def _attempt(
        self,
        job: JobAnalysisContext,
        chunk_id: uuid.UUID,
        request: TaskRequest,
        model: str,
        *,
        final: bool,
    ) -> CallResult:
        if model in self.misconfigured:
            return CallResult(TaskStatus.FAILED, reason=self.misconfigured[model])
        # Reserved only once a slot is free: calls queued in this process hold no budget.
        # The outcome is settled before the slot is released, so a 401 marks the model
        # misconfigured before the next waiting call is admitted.
        async with self.in_flight:
            row, refused = await self._reserve_shielded(job, chunk_id, request, model)
            if refused is not None:
                await self.ledger.record(row, CallOutcome.OVER_BUDGET, f"{refused.scope} is spent")
                metrics.LLM_CALLS.labels(model=model, outcome=CallOutcome.OVER_BUDGET).inc()
                return CallResult(TaskStatus.OVER_BUDGET, call_id=row.call_id, refused_by=refused)
            try:
                misconfigured = await self._admit(model, row.reserved_tokens)
            except BaseException as exc:  # cancelled or the database failed: nothing was sent
                cancelled = isinstance(exc, asyncio.CancelledError)
                settlement = Settlement(
                    CallOutcome.CANCELLED if cancelled else CallOutcome.FAILED,
                    reason="The job was cancelled" if cancelled else repr(exc),
                )
                await asyncio.shield(self._settle(row, settlement))
                raise
            if misconfigured is not None:
                await self._settle(row, Settlement(CallOutcome.FAILED, reason=misconfigured))
                return CallResult(TaskStatus.FAILED, call_id=row.call_id, reason=misconfigured)
            return await self._send(row, request, final=final)

    async def _reserve_shielded(
        self, job: JobAnalysisContext, chunk_id: uuid.UUID, request: TaskRequest, model: str
    ) -> tuple[CallRow, BudgetScope | None]:
        """A cancel during the reservation lets it finish, then releases it (spent: $0)."""
        reserving = asyncio.ensure_future(self._reserve(job, chunk_id, request, model))
        try:
            return await asyncio.shield(reserving)
        except asyncio.CancelledError:
            row, refused = await reserving
            if refused is None:
                cancelled = Settlement(CallOutcome.CANCELLED, reason="The job was cancelled")
                await self._settle(row, cancelled)
            raise

    async def _send(self, row: CallRow, request: TaskRequest, *, final: bool) -> CallResult:
        try:
            answer = await self.client.complete(
                row.model,
                request.messages,
                max_tokens=request.max_tokens,
                response_format=request.response_format,
            )
        except asyncio.CancelledError:
            # The server may finish (and bill) the answer nobody waits for: its worst case.
            settlement = Settlement(
                CallOutcome.CANCELLED, cost_usd=row.reserved_usd, reason="The job was cancelled"
            )
            await asyncio.shield(self._settle(row, settlement))
            raise
        except Exception as exc:
            return await self._failed(row, exc, final=final)
        return await self._succeeded(row, answer)

    async def _admit(self, model: str, tokens: int) -> str | None:
        """Wait until the model's shared limits admit the call; the reason when the model is
        misconfigured (then nothing is sent)."""
        limits = self.settings.limits_for(model)
        while True:
            if model in self.misconfigured:
                return self.misconfigured[model]
            admission = await self.models.admit(
                model, tokens, limits.requests_per_minute, limits.tokens_per_minute
            )
            if admission.misconfigured is not None:
                self.note_misconfigured(model, admission.misconfigured)
                return admission.misconfigured
            if admission.wait_seconds <= 0:
                return None
            await asyncio.sleep(min(admission.wait_seconds, MAX_ADMISSION_SLEEP))

    async def _succeeded(self, row: CallRow, answer: Answer) -> CallResult:
        price = self.settings.price(row.model)
        cost = price.cost_usd(answer.input_tokens, answer.output_tokens, answer.cached_tokens)
        settlement = Settlement(
            CallOutcome.OK,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            cached_tokens=answer.cached_tokens,
            cost_usd=cost,
            latency_ms=answer.latency_ms,
        )
        await self._settle(row, settlement)
        for kind, count in (
            ("input", answer.input_tokens),
            ("output", answer.output_tokens),
            ("cached", answer.cached_tokens),
        ):
            metrics.LLM_TOKENS.labels(model=row.model, tenant=row.tenant, kind=kind).inc(count)
        metrics.LLM_COST.labels(model=row.model, tenant=row.tenant).inc(cost)
        return CallResult(TaskStatus.OK, answer=answer, call_id=row.call_id, cost_usd=cost)

    async def _failed(self, row: CallRow, exc: Exception, *, final: bool) -> CallResult:
        failure = classify_failure(exc)
        if failure is None:
            # Not the server's answer: a bug or an unknown state; count the worst case.
            await self._settle(
                row, Settlement(CallOutcome.FAILED, cost_usd=row.reserved_usd, reason=repr(exc))
            )
            raise exc
        cost = row.reserved_usd if failure.maybe_billed else 0.0
        if failure.kind is FailureKind.TRANSIENT:
            outcome = CallOutcome.FAILED if final else CallOutcome.RETRIED
            await self._settle(row, Settlement(outcome, cost_usd=cost, reason=failure.reason))
            if failure.retry_after is not None:
                await self.models.slow_down(row.model, failure.retry_after)
            raise TransientFailure(failure) from exc
        await self._settle(
            row, Settlement(CallOutcome.FAILED, cost_usd=cost, reason=failure.reason)
        )
        if failure.kind is FailureKind.MISCONFIGURED:
            reason = f"The model {row.model} is misconfigured: {failure.reason}"
            await self.models.mark_misconfigured(row.model, reason)
            self.note_misconfigured(row.model, reason)
            return CallResult(TaskStatus.FAILED, call_id=row.call_id, reason=reason)
        return CallResult(
            TaskStatus.FAILED, call_id=row.call_id, reason=failure.reason, cost_usd=cost
        )

    def note_misconfigured(self, model: str, reason: str) -> None:
        self.misconfigured[model] = reason
        metrics.LLM_MISCONFIGURED.labels(model=model).set(1)

    async def _settle(self, row: CallRow, settlement: Settlement) -> None:
        await self.ledger.settle(row.call_id, settlement)
        metrics.LLM_CALLS.labels(model=row.model, outcome=settlement.outcome).inc()
