"""The LLM engine against real PostgreSQL and the scripted OpenAI stand-in (a real HTTP server):
the ledger, redelivery, cache, budgets across two engines, 429/401/5xx/timeouts, malformed
answers, latency overlap and cancellation. The real model's tests are in test_llm_model.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.analyzer.llm import (
    AnalysisOptions,
    JobAnalysisContext,
    LlmEngine,
    LlmSettings,
    ModelLimits,
    ModelPrice,
    ModelUnavailable,
    Task,
    TaskStatus,
)
from services.analyzer.llm.ledger import AttemptTaken, CallRow, budget_scopes
from shared.db import create_pool
from shared.events import Chunk, PageSource
from shared.settings import Settings
from tests.conftest import ROOT
from tests.support.openai_standin import OpenAIStandin, Reply

pytestmark = pytest.mark.integration

SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": "string"}, "total": {"type": "number"}},
    "required": ["invoice_number", "total"],
}
# $1000 / $2000 per million tokens: a 40+6-token call costs $0.052.
PRICE = ModelPrice(input_per_million=1000, output_per_million=2000, cached_input_per_million=500)
CALL_COST = (40 * 1000 + 6 * 2000) / 1_000_000


@pytest.fixture(scope="session")
def standin() -> Iterator[OpenAIStandin]:
    server = OpenAIStandin().start()
    yield server
    server.stop()


def make_settings(standin: OpenAIStandin, **overrides: Any) -> LlmSettings:
    """A model name of its own per test, so per-model state (429 slow-downs, the misconfigured
    flag, rate windows) never leaks between tests sharing the session's database."""
    model = f"standin-{uuid.uuid4().hex[:8]}"
    values: dict[str, Any] = {
        "base_url": standin.base_url,
        "api_key": "test-key",
        "model": model,
        "prices": {model: PRICE},
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 0.2,
        "max_attempts": 3,
        "cancel_poll_seconds": 0.05,
    }
    values.update(overrides)
    return LlmSettings(**values)


@pytest.fixture
async def engines(db_pool: asyncpg.Pool, standin: OpenAIStandin) -> AsyncIterator[list[LlmEngine]]:
    """Engines made by `start_engine`, closed after the test."""
    standin.reset(Reply())
    made: list[LlmEngine] = []
    yield made
    for engine in made:
        await engine.close()


async def start_engine(
    engines: list[LlmEngine], pool: asyncpg.Pool, settings: LlmSettings
) -> LlmEngine:
    engine = LlmEngine(pool, settings)
    await engine.start()
    engines.append(engine)
    return engine


def chunks(*texts: str) -> list[Chunk]:
    return [
        Chunk(
            chunk_id=uuid.uuid4(),
            page=i + 1,
            index=0,
            source=PageSource.TEXT_LAYER,
            start=0,
            end=len(t),
            text=t,
        )
        for i, t in enumerate(texts)
    ]


def job(tenant: str = "acme", **kwargs: Any) -> JobAnalysisContext:
    return JobAnalysisContext(
        job_id=uuid.uuid4(), tenant=f"{tenant}-{uuid.uuid4().hex[:6]}", **kwargs
    )


async def ledger_rows(pool: asyncpg.Pool, job_id: uuid.UUID) -> list[Any]:
    return list(
        await pool.fetch(
            "SELECT * FROM llm_calls WHERE job_id = $1 ORDER BY chunk_id, task, attempt", job_id
        )
    )


async def test_ledger_totals_are_the_servers_usage_and_redelivery_makes_no_call(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    the_job = job()
    pieces = chunks("First part.", "Second part.", "Third part.")
    outcomes = await engine.analyze_chunks(the_job, pieces)
    assert [o.results[Task.SUMMARY].value for o in outcomes] == ["A short summary."] * 3
    assert len(standin.requests) == 3
    cost = await engine.job_cost(the_job.job_id)
    assert (cost.calls, cost.input_tokens, cost.output_tokens) == (3, 120, 18)
    assert cost.cost_usd == pytest.approx(3 * CALL_COST)
    rows = await ledger_rows(db_pool, the_job.job_id)
    assert {r["outcome"] for r in rows} == {"ok"}
    assert all(r["prompt_version"] == "summary_chunk.v1" and r["latency_ms"] > 0 for r in rows)
    # Worst case reserved beforehand: counted prompt (bytes: the stand-in has no tokenizer)
    # plus max_tokens.
    assert all(r["reserved_usd"] >= r["cost_usd"] for r in rows)

    for _ in range(2):  # every message delivered twice more
        again = await engine.analyze_chunks(the_job, pieces)
        assert [o.results[Task.SUMMARY].value for o in again] == ["A short summary."] * 3
    assert len(standin.requests) == 3
    assert (await engine.job_cost(the_job.job_id)) == cost


async def test_cache_hit_across_two_jobs_of_a_tenant_costs_nothing(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    options = AnalysisOptions(tasks=(Task.EXTRACT,), schema=SCHEMA)
    standin.reset(Reply(content='{"invoice_number": "A-7", "total": 12.5}'))
    first = job(options=options)
    second = JobAnalysisContext(job_id=uuid.uuid4(), tenant=first.tenant, options=options)
    text = "Invoice A-7: total 12.5 EUR."
    await engine.analyze_chunks(first, chunks(text))
    [reused] = await engine.analyze_chunks(second, chunks("Intro.", text)[1:])
    assert len(standin.requests) == 1
    result = reused.results[Task.EXTRACT]
    assert result.from_cache and result.cost_usd == 0
    # Provenance is the second job's chunk, not the cached one's.
    assert result.value["invoice_number"]["chunk_id"] == str(reused.chunk_id)
    assert result.value["invoice_number"]["page"] == 2
    [row] = await ledger_rows(db_pool, second.job_id)
    assert (row["outcome"], float(row["cost_usd"])) == ("cache_hit", 0.0)
    # Another tenant's identical chunk is not served from this tenant's cache.
    await engine.analyze_chunks(job(options=options), chunks(text))
    assert len(standin.requests) == 2


async def test_429_retry_after_is_honoured_and_slows_the_whole_model(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    standin.script(Reply(status=429, headers={"Retry-After": "1"}))
    first_job, other_job = job(), job()
    first = asyncio.create_task(engine.analyze_chunks(first_job, chunks("one")))
    while not standin.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the 429 has been answered; another job's chunk comes along
    other = await engine.analyze_chunks(other_job, chunks("two"))
    await first
    assert other[0].results[Task.SUMMARY].status is TaskStatus.OK
    refused_at = standin.requests[0].at
    assert len(standin.requests) == 3
    assert all(r.at - refused_at >= 0.95 for r in standin.requests[1:])
    rows = await ledger_rows(db_pool, first_job.job_id)
    assert [(r["attempt"], r["outcome"], float(r["cost_usd"])) for r in rows] == [
        (1, "retried", 0.0),
        (2, "ok", pytest.approx(CALL_COST)),
    ]


async def test_401_marks_the_model_misconfigured_and_stops_calling_it(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    settings = make_settings(standin, concurrency=1)
    engine = await start_engine(engines, db_pool, settings)
    standin.reset(Reply(status=401, error="invalid api key"))
    outcomes = await engine.analyze_chunks(job(), chunks("a", "b", "c", "d"))  # no exception
    assert len(standin.requests) == 1
    assert {o.results[Task.SUMMARY].status for o in outcomes} == {TaskStatus.FAILED}
    assert all("misconfigured" in str(o.results[Task.SUMMARY].reason) for o in outcomes)
    assert settings.model in engine.misconfigured
    # A second process (running, not starting: a start clears the flag) sees the flag through
    # the database and sends nothing either.
    other = LlmEngine(db_pool, settings)
    engines.append(other)
    assert other.misconfigured == {}
    assert settings.model in await other.refresh_misconfigured()  # what its /readyz reads
    other.caller.misconfigured.clear()
    engines_before = len(standin.requests)
    again = await other.analyze_chunks(job(), chunks("e"))
    assert again[0].results[Task.SUMMARY].status is TaskStatus.FAILED
    assert len(standin.requests) == engines_before
    assert settings.model in other.misconfigured


async def test_malformed_extract_answer_is_asked_again_once_then_fails_with_a_reason(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    options = AnalysisOptions(tasks=(Task.EXTRACT,), schema=SCHEMA)
    standin.script(Reply(content="{not json"), Reply(content='{"invoice_number": 7}'))
    bad_job = job(options=options)
    [outcome] = await engine.analyze_chunks(bad_job, chunks("Invoice A-7"))
    result = outcome.results[Task.EXTRACT]
    assert result.status is TaskStatus.FAILED
    assert "not usable" in str(result.reason)
    assert result.cost_usd == pytest.approx(2 * CALL_COST)
    retry_messages = standin.requests[1].body["messages"]
    assert retry_messages[-2] == {"role": "assistant", "content": "{not json"}
    assert "not JSON" in retry_messages[-1]["content"]
    rows = await ledger_rows(db_pool, bad_job.job_id)
    assert [(r["outcome"], r["prompt_version"]) for r in rows] == [
        ("retried", "extract.v1"),
        ("failed", "extract.v1+extract_retry.v1"),
    ]
    # A recorded failure is a result: a redelivery does not call again.
    await engine.analyze_chunks(bad_job, [outcome_chunk(outcome.chunk_id, "Invoice A-7")])
    assert len(standin.requests) == 2

    standin.script(Reply(content="[]"), Reply(content='{"invoice_number": "A-7", "total": 3}'))
    [fixed] = await engine.analyze_chunks(job(options=options), chunks("Invoice A-7, 3 EUR"))
    assert fixed.results[Task.EXTRACT].value["invoice_number"]["start"] == 8


def outcome_chunk(chunk_id: uuid.UUID, text: str) -> Chunk:
    return Chunk(
        chunk_id=chunk_id,
        page=1,
        index=0,
        source=PageSource.TEXT_LAYER,
        start=0,
        end=len(text),
        text=text,
    )


async def test_garbled_body_5xx_and_timeouts_are_retried_and_billed_honestly(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(
        engines, db_pool, make_settings(standin, request_timeout_seconds=0.5)
    )
    standin.script(
        Reply(status=500), Reply(raw=b"{garbled"), Reply(delay=1.5), Reply(content="fine")
    )
    flaky = job(max_cost_usd=None)
    settings = engine.settings.model_copy(update={"max_attempts": 4})
    engine.caller.settings = settings
    [outcome] = await engine.analyze_chunks(flaky, chunks("text"))
    assert outcome.results[Task.SUMMARY].value == "fine"
    rows = await ledger_rows(db_pool, flaky.job_id)
    assert [r["outcome"] for r in rows] == ["retried", "retried", "retried", "ok"]
    # The 500 did no work; the garbled answer and the timeout may have: their worst case.
    assert float(rows[0]["cost_usd"]) == 0
    assert float(rows[1]["cost_usd"]) == float(rows[1]["reserved_usd"]) > 0
    assert float(rows[2]["cost_usd"]) == float(rows[2]["reserved_usd"]) > 0


async def test_a_chunk_that_keeps_failing_retries_alone(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin, max_attempts=2))

    def reply(body: dict[str, Any]) -> Reply:
        return Reply(status=503) if "BAD" in body["messages"][-1]["content"] else Reply()

    standin.reset(reply)
    the_job, pieces = job(), chunks("good one", "BAD one", "good two")
    with pytest.raises(ModelUnavailable):
        await engine.analyze_chunks(the_job, pieces)
    assert len(standin.requests) == 4  # two good chunks, the bad one twice
    standin.reset(Reply())
    outcomes = await engine.analyze_chunks(the_job, pieces)  # the redelivery
    assert len(standin.requests) == 1
    assert all(o.results[Task.SUMMARY].status is TaskStatus.OK for o in outcomes)
    rows = await ledger_rows(db_pool, the_job.job_id)
    assert sorted(r["outcome"] for r in rows) == ["failed", "ok", "ok", "ok", "retried"]


async def test_context_too_long_fails_the_chunk_with_the_servers_reason(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    standin.script(Reply(status=400, error="Requested tokens (3000) exceed context window of 2048"))
    [outcome] = await engine.analyze_chunks(job(), chunks("long " * 600))
    result = outcome.results[Task.SUMMARY]
    assert result.status is TaskStatus.FAILED
    assert "too long" in str(result.reason) and "2048" in str(result.reason)
    assert len(standin.requests) == 1


async def test_fixed_latency_calls_overlap_up_to_the_concurrency(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin, concurrency=4))
    standin.reset(Reply(delay=0.4))
    started = time.monotonic()
    outcomes = await engine.analyze_chunks(job(), chunks(*(f"chunk {i}" for i in range(8))))
    elapsed = time.monotonic() - started
    assert all(o.results[Task.SUMMARY].status is TaskStatus.OK for o in outcomes)
    arrivals = sorted(r.at for r in standin.requests)
    most_in_flight = max(sum(1 for b in arrivals if a <= b < a + 0.4) for a in arrivals)
    assert most_in_flight <= 4
    assert 0.8 <= elapsed < 2.8, elapsed  # two waves of 0.4 s, not eight (3.2 s)


async def test_cancel_aborts_calls_in_flight_within_two_seconds(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin, concurrency=2))
    standin.reset(Reply(delay=20))
    cancelled_at: list[float] = []

    async def is_cancelled() -> bool:
        if len(standin.requests) >= 2 and not cancelled_at:
            cancelled_at.append(time.monotonic())
        return bool(cancelled_at)

    the_job = job(is_cancelled=is_cancelled)
    outcomes = await engine.analyze_chunks(the_job, chunks(*(f"c{i}" for i in range(6))))
    assert time.monotonic() - cancelled_at[0] < 2.0
    assert {o.results[Task.SUMMARY].status for o in outcomes} == {TaskStatus.CANCELLED}
    assert len(standin.requests) == 2
    rows = await ledger_rows(db_pool, the_job.job_id)
    # The two calls in flight are spent at their worst case (the server may finish them);
    # nothing is left "reserved".
    assert [r["outcome"] for r in rows] == ["cancelled", "cancelled"]
    assert all(r["cost_usd"] == r["reserved_usd"] > 0 for r in rows)


async def test_a_budget_shared_by_two_engines_is_never_overspent(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine], test_settings: Settings
) -> None:
    settings = make_settings(standin, concurrency=4)
    standin.reset(Reply(delay=0.05))
    second_pool = await create_pool(test_settings.database_url, max_size=4)  # "another process"
    try:
        one = await start_engine(engines, db_pool, settings)
        two = await start_engine(engines, second_pool, settings)
        limit = 0.5
        the_job = job(max_cost_usd=limit, chunks_total=40)
        pieces = chunks(*(f"part {i} of a long text" for i in range(40)))
        got = await asyncio.gather(
            one.analyze_chunks(the_job, pieces[::2]), two.analyze_chunks(the_job, pieces[1::2])
        )
    finally:
        await second_pool.close()
    results = [o.results[Task.SUMMARY] for batch in got for o in batch]
    analysed = [r for r in results if r.status is TaskStatus.OK]
    refused = [r for r in results if r.status is TaskStatus.OVER_BUDGET]
    assert analysed and refused and len(analysed) + len(refused) == 40
    cost = await one.job_cost(the_job.job_id)
    assert cost.cost_usd <= limit
    assert len(standin.requests) == len(analysed)
    spent = await db_pool.fetchval(
        "SELECT spent_usd FROM llm_budgets WHERE scope = $1", f"job:{the_job.job_id}"
    )
    assert float(spent) == pytest.approx(cost.cost_usd)
    assert all(
        str(r.reason).startswith("The budget of $0.50 was reached after ")
        and str(r.reason).endswith(" of 40 chunks")
        for r in refused
    )
    assert cost.by_outcome["over_budget"] == len(refused)


async def test_a_call_whose_answer_was_lost_stays_spent_at_its_worst_case(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    """A crash after the call and before the settlement: the reserved row is the spend."""
    engine = await start_engine(engines, db_pool, make_settings(standin))
    the_job = job(max_cost_usd=1.0)
    row = CallRow(
        job_id=the_job.job_id,
        tenant=the_job.tenant,
        task="summary",
        chunk_id=uuid.uuid4(),
        attempt=1,
        model=engine.settings.model,
        prompt_version="summary_chunk.v1",
        reserved_tokens=500,
        reserved_usd=0.3,
        budget_scopes=budget_scopes(the_job.job_id, the_job.tenant, 1.0, None, None),
    )
    assert await engine.ledger.reserve(row) is None
    with pytest.raises(AttemptTaken):  # the same attempt cannot be written twice
        await engine.ledger.reserve(row)
    cost = await engine.job_cost(the_job.job_id)
    assert cost.cost_usd == pytest.approx(0.3) and cost.by_outcome == {"reserved": 1}
    spent = await db_pool.fetchval(
        "SELECT spent_usd FROM llm_budgets WHERE scope = $1", f"job:{the_job.job_id}"
    )
    assert float(spent) == pytest.approx(0.3)


async def test_a_tenants_daily_budget_holds_across_jobs(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(
        engines, db_pool, make_settings(standin, tenant_daily_budget_usd=0.5, concurrency=2)
    )
    first = job()
    second = JobAnalysisContext(job_id=uuid.uuid4(), tenant=first.tenant)
    await engine.analyze_chunks(first, chunks(*(f"a{i}" for i in range(6))))
    later = await engine.analyze_chunks(second, chunks(*(f"b{i}" for i in range(6))))
    spent = sum([(await engine.job_cost(j.job_id)).cost_usd for j in (first, second)])
    assert spent <= 0.5
    refused = [o.results[Task.SUMMARY] for o in later]
    assert all(r.status is TaskStatus.OVER_BUDGET for r in refused)
    assert str(refused[0].reason).startswith("The tenant's daily budget of $0.50 was reached")
    [usage] = await engine.usage(first.tenant, datetime.now(UTC) - timedelta(days=1))
    assert usage.cost_usd == pytest.approx(spent)
    assert usage.model == engine.settings.model


async def test_requests_per_minute_are_admitted_in_a_shared_sliding_window(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine]
) -> None:
    engine = await start_engine(engines, db_pool, make_settings(standin))
    model = engine.settings.model
    assert (await engine.models.admit(model, 10, rpm=2, tpm=100)).wait_seconds == 0
    assert (await engine.models.admit(model, 10, rpm=2, tpm=100)).wait_seconds == 0
    third = await engine.models.admit(model, 10, rpm=2, tpm=100)
    assert 55 < third.wait_seconds <= 60.6  # the window plus the arrival margin
    too_many_tokens = await engine.models.admit(model, 90, rpm=10, tpm=100)
    assert too_many_tokens.wait_seconds > 55


async def test_a_requests_limit_holds_at_the_server_across_two_engines(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine], test_settings: Settings
) -> None:
    """3 requests per 2 s window (the minute shortened for the test), shared by two engines
    with pools of their own: never more than 3 arrivals at the server in any 2 s."""
    settings = make_settings(standin, rate_window_seconds=2.0)
    settings = settings.model_copy(
        update={"limits": {settings.model: ModelLimits(requests_per_minute=3)}}
    )
    second_pool = await create_pool(test_settings.database_url, max_size=4)
    try:
        one = await start_engine(engines, db_pool, settings)
        two = await start_engine(engines, second_pool, settings)
        await asyncio.gather(
            one.analyze_chunks(job(), chunks(*(f"one {i}" for i in range(4)))),
            two.analyze_chunks(job(), chunks(*(f"two {i}" for i in range(4)))),
        )
    finally:
        await second_pool.close()
    arrivals = sorted(r.at for r in standin.requests)
    assert len(arrivals) == 8
    assert max(sum(1 for b in arrivals if a <= b < a + 2.0) for a in arrivals) <= 3


# Run in a child process: one engine analysing one chunk, killed by the test mid-call.
_ANALYZER_CHILD = """
import asyncio, json, os, sys, uuid
from services.analyzer.llm import JobAnalysisContext, LlmEngine, LlmSettings
from shared.db import create_pool
from shared.events import Chunk, PageSource

async def main() -> None:
    spec = json.loads(os.environ["LLM_CHILD_SPEC"])
    pool = await create_pool(spec["database_url"], max_size=2)
    engine = LlmEngine(pool, LlmSettings.model_validate(spec["settings"]))
    text = spec["text"]
    chunk = Chunk(chunk_id=uuid.UUID(spec["chunk_id"]), page=1, index=0,
                  source=PageSource.TEXT_LAYER, start=0, end=len(text), text=text)
    job = JobAnalysisContext(job_id=uuid.UUID(spec["job_id"]), tenant=spec["tenant"])
    await engine.analyze_chunks(job, [chunk])

asyncio.run(main())
"""


async def test_killing_the_analyzer_mid_call_loses_and_doubles_no_cost(
    db_pool: asyncpg.Pool, standin: OpenAIStandin, engines: list[LlmEngine], test_settings: Settings
) -> None:
    settings = make_settings(standin)
    the_job, [piece] = job(), chunks("a chunk whose answer is lost")
    standin.reset(Reply(delay=30))
    spec = {
        "database_url": test_settings.database_url,
        "settings": settings.model_dump(mode="json"),
        "text": piece.text,
        "chunk_id": str(piece.chunk_id),
        "job_id": str(the_job.job_id),
        "tenant": the_job.tenant,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _ANALYZER_CHILD],
        cwd=ROOT,
        env={**os.environ, "LLM_CHILD_SPEC": json.dumps(spec)},
    )
    try:
        deadline = time.monotonic() + 60
        while not standin.requests and time.monotonic() < deadline and child.poll() is None:
            await asyncio.sleep(0.05)
        assert standin.requests, "the child never called the model"
    finally:
        child.kill()
        child.wait()
    [lost] = await ledger_rows(db_pool, the_job.job_id)
    assert lost["outcome"] == "reserved" and lost["cost_usd"] == lost["reserved_usd"] > 0

    # The message is redelivered to another analyzer: one new call, a row of its own.
    standin.reset(Reply())
    engine = await start_engine(engines, db_pool, settings)
    [outcome] = await engine.analyze_chunks(the_job, [piece])
    assert outcome.results[Task.SUMMARY].status is TaskStatus.OK
    rows = await ledger_rows(db_pool, the_job.job_id)
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "reserved"), (2, "ok")]
    cost = await engine.job_cost(the_job.job_id)
    assert cost.cost_usd == pytest.approx(float(lost["reserved_usd"]) + CALL_COST)
    await engine.analyze_chunks(the_job, [piece])  # and once more: nothing new
    assert len(await ledger_rows(db_pool, the_job.job_id)) == 2
