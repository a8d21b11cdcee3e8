"""The analyze stage with an LLM (issue 11): the engine (services/analyzer/llm) against the
scripted OpenAI stand-in answering every call after a fixed 200 ms, beside two baselines
measured in the same run on the same stand-in:

- a bare sequential client loop (the openai SDK, one call after another);
- a bare asyncio.gather loop with a semaphore of 8 (the engine's concurrency).

Targets:
- the engine's wall time for 200 chunks <= 1.15 x the bare concurrent loop;
- docpipe's own cost per call (ledger, limiter, budgets) <= 5 ms at p50, in the 200-chunk run:
  the time each call holds its slot (reservation, limiter, HTTP call, settlement) minus its
  HTTP call's own time. The same figure one call at a time (nothing to share a durable commit
  with) is reported beside it;
- an RPM limit of 120 is never exceeded in any window, counted at the stand-in from the
  arrival times of its requests. The window is scaled: the limiter counts 120 calls per
  RPM_WINDOW_SECONDS instead of per 60 s, so the limit binds within seconds; the arrivals
  are checked in every window of that length;
- the local model's output tokens per second through the engine >= 0.9 x llama.cpp's server
  called directly with the same messages, one after another (when the stack runs the local
  model server).

The engine is measured directly (an LlmEngine on the benchmark stack's database), not through
the analyzer service: the figures are the engine's, with nothing of the bus in them.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Literal

import asyncpg
from openai import AsyncOpenAI

from benchmarks.common import BenchStack, distribution, target
from scripts.stack import MODEL_SERVER
from services.analyzer.llm import (
    AnalysisOptions,
    JobAnalysisContext,
    LlmEngine,
    LlmSettings,
    ModelLimits,
    ModelPrice,
    Task,
    TaskStatus,
)
from services.analyzer.llm.settings import LOCAL_MODEL
from services.analyzer.llm.tasks import build_request
from shared.db import create_pool
from shared.events import Chunk, PageSource
from tests.support.openai_standin import OpenAIStandin, Reply

Result = tuple[list[dict[str, Any]], dict[str, Any]]

LATENCY_SECONDS = 0.2
CONCURRENCY = 8
RPM_LIMIT = 120
RPM_WINDOW_SECONDS = 6.0  # 60 s scaled by 1/10
# Database connections per call in flight: a call's reads, its reservation and settlement, and
# the next calls' reads overlap (a pool smaller than this queues them behind each other).
POOL_PER_CALL = 3
PRICE = ModelPrice(input_per_million=0.5, output_per_million=1.5, cached_input_per_million=0.25)
OPTIONS = AnalysisOptions(tasks=(Task.SUMMARY,))

CHUNK_TEXT = (
    "Invoice {n} from ACME Corporation to Globex Ltd, dated March {day}, 2025. The order "
    "covers {n} units of industrial fasteners at $2.50 each, shipped from Rotterdam. Payment "
    "is due within thirty days; late payments accrue interest at one percent per month. "
    "Contact billing@acme.example for questions about this invoice."
)


def make_chunks(count: int, salt: str) -> list[Chunk]:
    """Distinct texts (no cache hit between chunks or runs)."""
    chunks = []
    for n in range(count):
        text = f"[{salt}] " + CHUNK_TEXT.format(n=n + 1, day=n % 28 + 1)
        chunks.append(
            Chunk(
                chunk_id=uuid.uuid4(),
                page=n + 1,
                index=0,
                source=PageSource.TEXT_LAYER,
                start=0,
                end=len(text),
                text=text,
            )
        )
    return chunks


def engine_settings(base_url: str, model: str, **overrides: Any) -> LlmSettings:
    values: dict[str, Any] = {
        "base_url": base_url,
        "api_key": "bench",
        "model": model,
        "prices": {model: PRICE},
        "concurrency": CONCURRENCY,
        "tokenizer": "bytes",  # the stand-in has no tokenizer endpoint
        # Both budgets on every call (job and tenant day): their cost is part of the figure.
        "tenant_daily_budget_usd": 1000.0,
        # A limit that never binds: the limiter's cost is part of the figure too.
        "limits": {model: ModelLimits(requests_per_minute=100_000)},
    }
    values.update(overrides)
    return LlmSettings(**values)


def analysis_job(chunks: int) -> JobAnalysisContext:
    return JobAnalysisContext(
        job_id=uuid.uuid4(),
        tenant=f"bench-{uuid.uuid4().hex[:6]}",
        options=OPTIONS,
        max_cost_usd=1000.0,
        chunks_total=chunks,
    )


async def timed(work: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


# --- baselines -------------------------------------------------------------------------------


def bare_client(base_url: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=60)


async def bare_call(client: AsyncOpenAI, model: str, chunk: Chunk, settings: LlmSettings) -> int:
    request = build_request(Task.SUMMARY, chunk.text, OPTIONS, settings)
    response = await client.chat.completions.create(
        model=model,
        messages=request.messages,  # type: ignore[arg-type]
        max_tokens=request.max_tokens,
        temperature=0,
    )
    return response.usage.completion_tokens if response.usage else 0


async def bare_sequential(base_url: str, model: str, chunks: list[Chunk]) -> float:
    settings = engine_settings(base_url, model)
    async with bare_client(base_url) as client:

        async def loop() -> None:
            for chunk in chunks:
                await bare_call(client, model, chunk, settings)

        return await timed(loop())


async def bare_concurrent(base_url: str, model: str, chunks: list[Chunk]) -> float:
    settings = engine_settings(base_url, model)
    gate = asyncio.Semaphore(CONCURRENCY)
    async with bare_client(base_url) as client:

        async def one(chunk: Chunk) -> None:
            async with gate:
                await bare_call(client, model, chunk, settings)

        return await timed(asyncio.gather(*(one(c) for c in chunks)))


# --- the engine ------------------------------------------------------------------------------


class CallClock:
    """Per call of an engine run: how long it held its slot (from the reservation to the
    settlement: ledger, budgets, limiter, the HTTP call) and its HTTP call's own time. The
    difference is docpipe's own work for the call; waiting for a free slot is queueing, which
    the bare loops have too, and is not part of it."""

    def __init__(self) -> None:
        self.held: dict[object, float] = defaultdict(float)
        self.http: dict[object, float] = defaultdict(float)

    def overheads_ms(self) -> list[float]:
        return [(self.held[k] - self.http.get(k, 0.0)) * 1000 for k in list(self.held)]

    def attach(self, engine: LlmEngine) -> None:
        clock = self
        complete = engine.client.complete
        since: dict[object, float] = {}

        async def timed_complete(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await complete(*args, **kwargs)
            finally:
                clock.http[asyncio.current_task()] += time.perf_counter() - started

        class TimedSlots(asyncio.Semaphore):
            async def acquire(self) -> Literal[True]:
                taken = await super().acquire()
                since[asyncio.current_task()] = time.perf_counter()
                return taken

            def release(self) -> None:
                task = asyncio.current_task()
                if task in since:
                    clock.held[task] += time.perf_counter() - since.pop(task)
                super().release()

        engine.client.complete = timed_complete  # type: ignore[method-assign]
        engine.caller.in_flight = TimedSlots(engine.settings.concurrency)


async def engine_run(
    pool: asyncpg.Pool, settings: LlmSettings, chunks: list[Chunk], clock: CallClock | None = None
) -> tuple[float, list[Any]]:
    engine = LlmEngine(pool, settings)
    await engine.start()
    if clock is not None:
        clock.attach(engine)
    try:
        job = analysis_job(len(chunks))
        started = time.perf_counter()
        outcomes = await engine.analyze_chunks(job, chunks)
        return time.perf_counter() - started, outcomes
    finally:
        await engine.close()


def all_ok(outcomes: list[Any]) -> bool:
    return all(r.status is TaskStatus.OK for o in outcomes for r in o.results.values())


async def one_at_a_time_overhead(
    pool: asyncpg.Pool, base_url: str, model: str, chunks: list[Chunk]
) -> list[float]:
    """One call at a time (nothing to share a commit with): docpipe's work per call (ms)."""
    engine = LlmEngine(pool, engine_settings(base_url, model))
    await engine.start()
    clock = CallClock()
    clock.attach(engine)
    try:
        job = analysis_job(len(chunks))
        for chunk in chunks:
            await engine.analyze_chunks(job, [chunk])
    finally:
        await engine.close()
    return clock.overheads_ms()


def max_in_window(arrivals: list[float], window: float) -> int:
    """The most arrivals in any half-open window [t, t + window)."""
    ordered = sorted(arrivals)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while ordered[first] <= at - window:
            first += 1
        most = max(most, last - first + 1)
    return most


async def rate_limited(
    pool: asyncpg.Pool, standin: OpenAIStandin, model: str, chunks: list[Chunk], limit: int
) -> tuple[int, float]:
    """(most requests seen by the stand-in in any window, wall seconds) under the limit."""
    standin.reset(Reply(delay=LATENCY_SECONDS))
    settings = engine_settings(
        standin.base_url,
        model,
        limits={model: ModelLimits(requests_per_minute=limit)},
        rate_window_seconds=RPM_WINDOW_SECONDS,
    )
    wall, _ = await engine_run(pool, settings, chunks)
    arrivals = [r.at for r in standin.requests]
    return max_in_window(arrivals, RPM_WINDOW_SECONDS), wall


# --- the local model -------------------------------------------------------------------------


async def local_model_tokens_per_second(
    pool: asyncpg.Pool, base_url: str, chunks: list[Chunk]
) -> dict[str, float]:
    """Output tokens per second: the server called directly one request after another, then
    the same messages through the engine (calls overlapping; the server takes them in turn)."""
    settings = engine_settings(base_url, LOCAL_MODEL, tokenizer="server")
    async with bare_client(base_url) as client:
        started = time.perf_counter()
        direct_tokens = 0
        for chunk in chunks:
            direct_tokens += await bare_call(client, LOCAL_MODEL, chunk, settings)
        direct_seconds = time.perf_counter() - started
    engine = LlmEngine(pool, settings)
    await engine.start()
    try:
        job = analysis_job(len(chunks))
        engine_seconds = await timed(engine.analyze_chunks(job, chunks))
        engine_tokens = (await engine.job_cost(job.job_id)).output_tokens
    finally:
        await engine.close()
    return {
        "direct_tokens_per_s": round(direct_tokens / direct_seconds, 2),
        "engine_tokens_per_s": round(engine_tokens / engine_seconds, 2),
        "direct_output_tokens": direct_tokens,
        "engine_output_tokens": engine_tokens,
    }


# --- the benchmark ---------------------------------------------------------------------------


async def run(bs: BenchStack, work: Path, smoke: bool) -> Result:
    count = 24 if smoke else 200
    limit = 12 if smoke else RPM_LIMIT
    standin = OpenAIStandin(Reply(delay=LATENCY_SECONDS)).start()
    # The engine's own pool, as an analyzer process would size it for its calls in flight.
    pool = await create_pool(bs.settings.database_url, max_size=POOL_PER_CALL * CONCURRENCY)
    try:
        return await _measure(bs, pool, standin, count, limit, smoke)
    finally:
        await pool.close()
        standin.stop()


async def _measure(
    bs: BenchStack,
    pool: asyncpg.Pool,
    standin: OpenAIStandin,
    count: int,
    limit: int,
    smoke: bool,
) -> Result:
    model = f"bench-standin-{uuid.uuid4().hex[:6]}"
    url = standin.base_url
    sequential = await bare_sequential(url, model, make_chunks(count, "seq"))
    concurrent = await bare_concurrent(url, model, make_chunks(count, "gather"))
    clock = CallClock()
    settings = engine_settings(url, model)
    wall, outcomes = await engine_run(pool, settings, make_chunks(count, "e"), clock)
    if not all_ok(outcomes):
        bs.failures.append("llm: the engine's run did not analyse every chunk")
    overheads = clock.overheads_ms()
    alone = await one_at_a_time_overhead(pool, url, model, make_chunks(12 if smoke else 40, "o"))
    seen, limited_wall = await rate_limited(pool, standin, model, make_chunks(count, "r"), limit)
    detail: dict[str, Any] = {
        "chunks": count,
        "stand_in_latency_s": LATENCY_SECONDS,
        "concurrency": CONCURRENCY,
        "bare_sequential_s": round(sequential, 3),
        "bare_concurrent_s": round(concurrent, 3),
        "engine_s": round(wall, 3),
        "overhead_ms": distribution(overheads),
        "overhead_one_call_at_a_time_ms": distribution(alone),
        "rate_limited_s": round(limited_wall, 3),
        "engine_pool_size": POOL_PER_CALL * CONCURRENCY,
    }
    targets = [
        target(
            "llm_analyze_wall_vs_bare_concurrent",
            wall / concurrent,
            "<= 1.15",
            wall / concurrent <= 1.15,
            engine_s=round(wall, 3),
            bare_concurrent_s=round(concurrent, 3),
            bare_sequential_s=round(sequential, 3),
        ),
        target(
            "llm_docpipe_overhead_per_call_p50_ms",
            statistics.median(overheads),
            "<= 5 ms",
            statistics.median(overheads) <= 5,
            p95_ms=distribution(overheads)["p95"],
            calls=len(overheads),
            measured="in the engine run (8 in flight): slot held minus the HTTP call",
            one_at_a_time_p50_ms=distribution(alone)["p50"],
        ),
        target(
            "llm_rpm_limit_max_in_window",
            seen,
            f"<= {limit} in any {RPM_WINDOW_SECONDS:g} s window (60 s scaled 1/10)",
            seen <= limit,
            calls=count,
            wall_s=round(limited_wall, 2),
        ),
    ]
    targets += await _local_model(bs, pool, smoke, detail)
    return targets, detail


async def _local_model(
    bs: BenchStack, pool: asyncpg.Pool, smoke: bool, detail: dict[str, Any]
) -> list[dict[str, Any]]:
    if MODEL_SERVER not in bs.stack.services:
        detail["local_model"] = "not measured: the stack runs no local model server"
        return []
    base_url = bs.stack.env["DOCPIPE_LLM_BASE_URL"]
    figures = await local_model_tokens_per_second(
        pool, base_url, make_chunks(2 if smoke else 6, "local")
    )
    detail["local_model"] = figures
    ratio = figures["engine_tokens_per_s"] / max(figures["direct_tokens_per_s"], 1e-9)
    return [
        target(
            "llm_local_model_tokens_per_s_engine_vs_direct",
            ratio,
            ">= 0.9",
            ratio >= 0.9,
            **figures,
        )
    ]
