"""AI analysis through the whole pipeline, on the real stack (RabbitMQ, PostgreSQL, every
service as a process): documents submitted over HTTP with an `analysis` option, analysed by
the REAL local model (llama.cpp's server, as in test_llm_model.py) or, for what a model cannot
do on cue (a 401), by the scripted stand-in."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from scripts.stack import Stack, stack_ports
from services.analyzer.llm.settings import LOCAL_MODEL
from shared.events import Chunk, DocumentSummarize, PageExtracted, PageSource
from shared.settings import Settings
from tests.fixtures import pdf_with_pages
from tests.integration.stack_client import StackClient, publish_as_upstream
from tests.integration.test_llm_model import model_server_url  # noqa: F401 (a fixture)
from tests.stack_fixture import ARTIFACTS, stack_env
from tests.support.openai_standin import OpenAIStandin, Reply

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
FULL = {
    "backend": "llm",
    "tasks": ["summary", "classify", "extract"],
    "labels": ["invoice", "letter"],
    "schema": SCHEMA,
    "max_cost_usd": 5.0,
}


@asynccontextmanager
async def ai_stack(
    settings: Settings, llm_env: dict[str, str], *, analyzers: int = 1
) -> AsyncIterator[StackClient]:
    """A stack of its own (own bus prefix: the session stack may be running) whose analyzers
    call the model named by `llm_env`; `analyzers` > 1 adds analyzer processes."""
    private = settings.model_copy(
        update={"bus_prefix": f"{settings.bus_prefix}_ai{uuid.uuid4().hex[:6]}"}
    )
    env = {**stack_env(private), **llm_env}
    log_dir = ARTIFACTS / "logs" / private.bus_prefix
    stacks = [Stack(env, log_dir=log_dir)]
    for i in range(analyzers - 1):
        extra = {**env, **stack_ports()}
        stacks.append(Stack(extra, services=("analyzer",), log_dir=log_dir / f"analyzer{i + 2}"))
    try:
        for running in stacks:
            await running.start()
        for running in stacks:
            await running.wait_ready(120)
        keys = private.tenants_by_key
        key, other = list(keys)[:2]
        yield StackClient(
            stacks[0], key=key, other_key=other, admin_key=sorted(private.admin_key_set)[0]
        )
    finally:
        for running in reversed(stacks):
            await running.stop()


async def submit(
    client: StackClient, path: Path, analysis: dict[str, Any], *, force: bool = True
) -> httpx.Response:
    """POST the document; `force` (the default: tests share one database) processes it again
    even when an identical job (same bytes and options) has completed, instead of reusing
    that job's result."""
    data = {"analysis": json.dumps(analysis)}
    if force:
        data["force"] = "true"
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(
            f"{client.api}/v1/jobs",
            headers=client.headers(),
            files={"file": (path.name, path.read_bytes())},
            data=data,
        )


async def submit_ok(
    client: StackClient, path: Path, analysis: dict[str, Any], *, force: bool = True
) -> str:
    response = await submit(client, path, analysis, force=force)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


async def ledger(pool: asyncpg.Pool, job_id: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch(
            "SELECT * FROM llm_calls WHERE job_id = $1 ORDER BY created_at", uuid.UUID(job_id)
        )
    )


def spent(rows: list[asyncpg.Record]) -> tuple[int, float]:
    tokens = sum(r["input_tokens"] + r["output_tokens"] for r in rows)
    return tokens, float(sum(r["cost_usd"] for r in rows))


async def progress(client: StackClient, job_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.get(
            f"{client.stack.url('progress')}/v1/jobs/{job_id}/progress", headers=client.headers()
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def two_page_pdf(tmp_path: Path) -> Path:
    return pdf_with_pages(tmp_path / "mail.pdf", [INVOICE, LETTER])


# --- the real model -------------------------------------------------------------------------


def real_model_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "DOCPIPE_LLM_BASE_URL": url,
        "DOCPIPE_LLM_MODEL": LOCAL_MODEL,
        "DOCPIPE_LLM_REQUEST_TIMEOUT_SECONDS": "120",
        "DOCPIPE_ANALYSIS_PROFILES": json.dumps({"mail": FULL}),
        **extra,
    }


async def test_a_document_through_summary_classify_and_extract_on_the_real_model(
    test_settings: Settings,
    db_pool: asyncpg.Pool,
    rabbit_available: None,
    model_server_url: str,  # noqa: F811
    two_page_pdf: Path,
) -> None:
    async with ai_stack(test_settings, real_model_env(model_server_url)) as client:
        job_id = await submit_ok(client, two_page_pdf, {"profile": "mail"})
        final = await client.wait(job_id, timeout=600)
        assert final["status"] == "completed", final
        result = (await client.result(job_id)).json()

        # Every chunk has the model's answer (or a recorded failure) for every task.
        chunks = result["chunks"]
        assert len(chunks) == 2
        for chunk in chunks:
            llm = chunk["analysis"]["llm"]
            assert set(llm) == {"summary", "classify", "extract"}
            assert chunk["analysis"]["word_count"] > 0  # the built-in fields stay
            assert all(r["status"] in ("ok", "failed") for r in llm.values()), llm
            assert llm["summary"]["status"] == "ok" and llm["summary"]["value"]
            if llm["classify"]["status"] == "ok":
                assert llm["classify"]["value"] in ("invoice", "letter")
        section = result["analysis"]
        assert section["document_summary"]["status"] == "ok", section
        assert section["document_summary"]["summary"]

        # The totals are the ledger's (the server's usage), in the result, the row and the
        # last snapshot alike.
        rows = await ledger(db_pool, job_id)
        tokens, cost = spent(rows)
        assert tokens > 0 and cost > 0
        assert all(r["outcome"] in ("ok", "retried", "failed") for r in rows)
        assert section["tokens"] == tokens
        assert section["cost_usd"] == pytest.approx(cost, abs=1e-9)
        assert result["cost"]["total_usd"] == pytest.approx(cost, abs=1e-6)
        chunk_tokens = sum(c["analysis"]["tokens"] for c in chunks)
        assert chunk_tokens + section["document_summary"]["tokens"] == tokens
        snapshot = await progress(client, job_id)
        assert snapshot["tokens"] == tokens
        assert snapshot["cost_usd"] == pytest.approx(cost, abs=1e-9)
        job_row = await db_pool.fetchrow(
            "SELECT tokens, cost_usd FROM jobs WHERE job_id = $1", uuid.UUID(job_id)
        )
        assert job_row is not None and job_row["tokens"] == tokens

        # Every message of the finished job, redelivered twice: no new call, no new total.
        private = test_settings.model_copy(update={"bus_prefix": bus_prefix_of(client)})
        for _ in range(2):
            for page in (1, 2):
                page_chunks = [chunk_of(job_id, c) for c in chunks if c["page"] == page]
                event = PageExtracted(
                    job_id=uuid.UUID(job_id), page=page, text="", chunks=page_chunks
                )
                await publish_as_upstream(private, event)
            await publish_as_upstream(
                private, DocumentSummarize(job_id=uuid.UUID(job_id), tenant=final["tenant"])
            )

        # A second job of the same document: every answer is a cache hit, at $0. Its
        # completion also shows the analyzer has drained the redelivered messages before it.
        # `force`: without it the duplicate detection reuses the first job's result and the
        # second job makes no call (no ledger row) at all.
        second = await submit_ok(client, two_page_pdf, {"profile": "mail"}, force=True)
        assert (await client.wait(second, timeout=600))["status"] == "completed"
        second_rows = await ledger(db_pool, second)
        assert second_rows and all(r["outcome"] == "cache_hit" for r in second_rows)
        assert spent(second_rows) == (0, 0.0)
        assert (await client.result(second)).json()["analysis"]["cost_usd"] == 0

        assert await ledger(db_pool, job_id) == rows
        assert (await progress(client, job_id))["tokens"] == tokens


def bus_prefix_of(client: StackClient) -> str:
    return client.stack.env["DOCPIPE_BUS_PREFIX"]


def chunk_of(job_id: str, entry: dict[str, Any]) -> Chunk:
    return Chunk(
        chunk_id=uuid.UUID(entry["chunk_id"]),
        page=entry["page"],
        index=entry["index"],
        source=PageSource(entry["source"]),
        start=entry["start"],
        end=entry["end"],
        text=entry["text"],
    )


async def test_a_budget_running_out_across_two_analyzers_gives_a_partial_result(
    test_settings: Settings,
    db_pool: asyncpg.Pool,
    rabbit_available: None,
    model_server_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    # A made-up high price: a summary call's worst case (prompt + 120 answer tokens) is about
    # $0.37 and its real cost about half that, so $0.50 runs out after two or three chunks.
    price = {"input_per_million": 1000, "output_per_million": 2000, "cached_input_per_million": 500}
    env = real_model_env(model_server_url, DOCPIPE_LLM_PRICES=json.dumps({LOCAL_MODEL: price}))
    pages = [INVOICE, LETTER, INVOICE.replace("A-1047", "B-2231"), LETTER.replace("Tom", "Ann")]
    pdf = pdf_with_pages(tmp_path / "four.pdf", pages)
    async with ai_stack(test_settings, env, analyzers=2) as client:
        job_id = await submit_ok(
            client, pdf, {"backend": "llm", "tasks": ["summary"], "max_cost_usd": 0.5}
        )
        final = await client.wait(job_id, timeout=600)
        assert final["status"] == "completed" and final["partial"], final
        assert final["error"].startswith("The budget of $0.50 was reached after"), final
        result = (await client.result(job_id)).json()
        assert result["partial"] is True
        statuses = [c["analysis"]["llm"]["summary"]["status"] for c in result["chunks"]]
        assert "over_budget" in statuses, statuses
        rows = await ledger(db_pool, job_id)
        _, cost = spent(rows)
        assert cost <= 0.5 + 1e-9  # never more than the budget, across both processes
        assert result["analysis"]["cost_usd"] == pytest.approx(cost, abs=1e-9)


# --- the scripted stand-in ------------------------------------------------------------------


async def test_a_refused_key_fails_chunks_with_a_reason_not_a_dead_letter_storm(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, two_page_pdf: Path
) -> None:
    standin = OpenAIStandin(Reply(status=401, error="Incorrect API key provided")).start()
    model = f"standin-{uuid.uuid4().hex[:8]}"
    price = {"input_per_million": 1, "output_per_million": 1, "cached_input_per_million": 1}
    env = {
        "DOCPIPE_LLM_BASE_URL": standin.base_url,
        "DOCPIPE_LLM_MODEL": model,
        "DOCPIPE_LLM_TOKENIZER": "bytes",
        "DOCPIPE_LLM_PRICES": json.dumps({model: price}),
    }
    try:
        async with ai_stack(test_settings, env) as client:
            # Refused at submit, over HTTP: a 422 whose detail names the member.
            refused = await submit(client, two_page_pdf, {"backend": "llm", "max_cost_usd": -1})
            assert refused.status_code == 422, refused.text
            assert "analysis.max_cost_usd" in refused.text
            job_id = await submit_ok(client, two_page_pdf, {"backend": "llm", "tasks": ["summary"]})
            final = await client.wait(job_id, timeout=120)
            assert final["status"] == "completed", final
            result = (await client.result(job_id)).json()
            for chunk in result["chunks"]:
                summary = chunk["analysis"]["llm"]["summary"]
                assert summary["status"] == "failed" and "401" in (summary["reason"] or "")
            assert result["analysis"]["document_summary"]["status"] == "failed"
            # The first refusal stops the calls: no call per message, no retry storm.
            assert len(standin.requests) <= 2, len(standin.requests)
            dead = await db_pool.fetchval(
                "SELECT count(*) FROM dead_letters WHERE job_id = $1", uuid.UUID(job_id)
            )
            assert dead == 0
            async with httpx.AsyncClient(timeout=10) as http:
                ready = await http.get(f"{client.stack.url('analyzer')}/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["llm_model"] is False
    finally:
        standin.stop()


async def test_cancel_mid_analysis_stops_the_calls_within_two_seconds(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, two_page_pdf: Path
) -> None:
    standin = OpenAIStandin(Reply(content="A summary.", delay=30)).start()
    model = f"standin-{uuid.uuid4().hex[:8]}"
    price = {"input_per_million": 1, "output_per_million": 1, "cached_input_per_million": 1}
    env = {
        "DOCPIPE_LLM_BASE_URL": standin.base_url,
        "DOCPIPE_LLM_MODEL": model,
        "DOCPIPE_LLM_TOKENIZER": "bytes",
        "DOCPIPE_LLM_PRICES": json.dumps({model: price}),
        "DOCPIPE_LLM_CANCEL_POLL_SECONDS": "0.2",
    }
    try:
        async with ai_stack(test_settings, env) as client:
            job_id = await submit_ok(client, two_page_pdf, {"backend": "llm", "tasks": ["summary"]})
            deadline = time.monotonic() + 60
            while not await ledger(db_pool, job_id):  # a call is in flight
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            async with httpx.AsyncClient(timeout=10) as http:
                cancelled = await http.post(
                    f"{client.api}/v1/jobs/{job_id}/cancel", headers=client.headers()
                )
            assert cancelled.status_code in (200, 202), cancelled.text
            asked = time.monotonic()
            while any(r["outcome"] == "reserved" for r in await ledger(db_pool, job_id)):
                assert time.monotonic() - asked < 2.0, "calls still in flight 2 s after cancel"
                await asyncio.sleep(0.05)
            rows = await ledger(db_pool, job_id)
            assert rows and all(r["outcome"] == "cancelled" for r in rows)
            final = await client.wait(job_id, timeout=30)
            assert final["status"] == "cancelled"
    finally:
        standin.stop()


async def test_killing_the_analyzer_mid_call_loses_and_doubles_no_cost(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, tmp_path: Path
) -> None:
    standin = OpenAIStandin(Reply(content="A summary.", delay=3)).start()
    model = f"standin-{uuid.uuid4().hex[:8]}"
    price = {"input_per_million": 1000, "output_per_million": 2000, "cached_input_per_million": 1}
    env = {
        "DOCPIPE_LLM_BASE_URL": standin.base_url,
        "DOCPIPE_LLM_MODEL": model,
        "DOCPIPE_LLM_TOKENIZER": "bytes",
        "DOCPIPE_LLM_PRICES": json.dumps({model: price}),
    }
    pdf = pdf_with_pages(tmp_path / "one.pdf", [LETTER])
    try:
        async with ai_stack(test_settings, env) as client:
            job_id = await submit_ok(client, pdf, {"backend": "llm", "tasks": ["summary"]})
            deadline = time.monotonic() + 60
            while not await ledger(db_pool, job_id):  # the call is in flight
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            client.stack.signal("analyzer")  # SIGKILL; the stack starts it again
            final = await client.wait(job_id, timeout=180)
            assert final["status"] == "completed", final
            rows = await ledger(db_pool, job_id)
            chunk_rows = [r for r in rows if r["task"] == "summary"]
            # The killed call stays on the ledger at its reserved worst case (the money may
            # have left); the redelivery's call is a new attempt; nothing is counted twice.
            assert [r["attempt"] for r in chunk_rows] == [1, 2], rows
            assert chunk_rows[0]["outcome"] == "reserved"
            assert chunk_rows[0]["cost_usd"] == chunk_rows[0]["reserved_usd"] > 0
            assert chunk_rows[1]["outcome"] == "ok"
            assert len({r["call_id"] for r in rows}) == len(rows)
            results = await db_pool.fetchval(
                "SELECT count(*) FROM llm_results WHERE job_id = $1 AND task = 'summary'",
                uuid.UUID(job_id),
            )
            assert results == 1
            _, cost = spent(rows)
            result = (await client.result(job_id)).json()
            assert result["analysis"]["cost_usd"] == pytest.approx(cost, abs=1e-9)
    finally:
        standin.stop()
