"""The LLM engine against the REAL local model (llama.cpp's server with SmolLM2-135M, started
from scripts/model_server.py) and real PostgreSQL. Under CI=true a missing server fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from scripts.stack import free_port
from services.analyzer.llm import (
    AnalysisOptions,
    JobAnalysisContext,
    LlmEngine,
    LlmSettings,
    Task,
    TaskStatus,
)
from services.analyzer.llm.client import Answer
from shared.events import Chunk, PageSource
from tests.conftest import ROOT, unavailable

pytestmark = pytest.mark.integration

INVOICE = (
    "INVOICE A-1047. Acme Supplies GmbH, Berlin. Date: 3 March 2025. "
    "2 boxes of printer paper, 1 toner cartridge. Total due: 148.50 EUR within 30 days."
)
LETTER = (
    "Dear Ms Jones, thank you for your kind letter of 2 May. We were glad to hear that the "
    "workshop went well and hope to see you again at our autumn meeting. Yours sincerely, Tom."
)
SCHEMA = {
    "type": "object",
    "properties": {
        "invoice_number": {"type": "string", "maxLength": 20},
        "total": {"type": "number"},
    },
    "required": ["invoice_number", "total"],
    "additionalProperties": False,
}


@pytest.fixture(scope="session")
def model_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "scripts.model_server", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                unavailable(
                    "the local model server did not start (scripts/install_model_server.sh): "
                    + log.read_text()[-800:]
                )
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                unavailable("the local model server was not healthy within 180 s")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


class RecordingEngine(LlmEngine):
    """The engine with every answer the server gave kept aside (its usage figures)."""

    answers: list[Answer]


@pytest.fixture
async def engine(db_pool: asyncpg.Pool, model_server_url: str) -> AsyncIterator[RecordingEngine]:
    settings = LlmSettings(base_url=model_server_url, request_timeout_seconds=180)
    made = RecordingEngine(db_pool, settings)
    made.answers = []
    complete = made.client.complete

    async def recording(*args: Any, **kwargs: Any) -> Answer:
        answer = await complete(*args, **kwargs)
        made.answers.append(answer)
        return answer

    made.client.complete = recording  # type: ignore[method-assign]
    await made.start()
    yield made
    await made.close()


def chunk(page: int, text: str) -> Chunk:
    return Chunk(
        chunk_id=uuid.uuid4(),
        page=page,
        index=0,
        source=PageSource.TEXT_LAYER,
        start=10,
        end=10 + len(text),
        text=text,
    )


async def test_summary_classify_and_extract_on_the_real_model(
    engine: RecordingEngine, db_pool: asyncpg.Pool
) -> None:
    options = AnalysisOptions(
        tasks=(Task.SUMMARY, Task.CLASSIFY, Task.EXTRACT),
        labels=("invoice", "letter"),
        schema=SCHEMA,
    )
    job = JobAnalysisContext(
        job_id=uuid.uuid4(), tenant=f"t-{uuid.uuid4().hex[:6]}", options=options
    )
    pieces = [chunk(1, INVOICE), chunk(2, LETTER)]
    outcomes = await engine.analyze_chunks(job, pieces)

    for outcome in outcomes:
        summary = outcome.results[Task.SUMMARY]
        assert summary.status is TaskStatus.OK and summary.value.strip()
        label = outcome.results[Task.CLASSIFY]
        assert label.status is TaskStatus.OK and label.value in ("invoice", "letter")
    fields = outcomes[0].results[Task.EXTRACT]
    assert fields.status is TaskStatus.OK, fields.reason
    assert isinstance(fields.value["total"]["value"], int | float)
    assert fields.value["invoice_number"]["page"] == 1
    assert fields.value["invoice_number"]["chunk_id"] == str(pieces[0].chunk_id)

    document = await engine.summarize_document(job)
    assert document.status is TaskStatus.OK and document.summary
    assert document.chunks_summarised == 2

    # The ledger's totals are the server's usage figures, priced by the table.
    cost = await engine.job_cost(job.job_id)
    assert cost.calls == len(engine.answers)
    assert cost.input_tokens == sum(a.input_tokens for a in engine.answers)
    assert cost.output_tokens == sum(a.output_tokens for a in engine.answers)
    price = engine.settings.price(engine.settings.model)
    assert cost.cost_usd == pytest.approx(
        sum(
            price.cost_usd(a.input_tokens, a.output_tokens, a.cached_tokens) for a in engine.answers
        )
    )
    rows = await db_pool.fetch("SELECT * FROM llm_calls WHERE job_id = $1", job.job_id)
    # The reservation, counted with the server's tokenizer, never undercounts the prompt.
    assert all(r["reserved_tokens"] >= r["input_tokens"] + r["output_tokens"] for r in rows)
    assert {r["prompt_version"] for r in rows} >= {"summary_chunk.v1", "classify.v1", "extract.v1"}

    # Redelivering everything twice makes no new call and changes no total.
    calls = len(engine.answers)
    for _ in range(2):
        await engine.analyze_chunks(job, pieces)
        await engine.summarize_document(job)
    assert len(engine.answers) == calls
    assert await engine.job_cost(job.job_id) == cost


async def test_a_chunk_longer_than_the_context_fails_with_the_servers_reason(
    engine: RecordingEngine,
) -> None:
    job = JobAnalysisContext(job_id=uuid.uuid4(), tenant="t-long")
    [outcome] = await engine.analyze_chunks(job, [chunk(1, "word " * 3000)])
    result = outcome.results[Task.SUMMARY]
    assert result.status is TaskStatus.FAILED
    assert "too long" in str(result.reason)
    assert engine.answers == []
