"""The LLM engine's pure parts: prompts, requests, answers, provenance, prices, limits, errors."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from services.analyzer.llm import budget_sentence
from services.analyzer.llm.client import FailureKind, classify_failure, retry_after_seconds
from services.analyzer.llm.ledger import budget_scopes, call_id
from services.analyzer.llm.limiter import _window_wait
from services.analyzer.llm.models import AnalysisOptions, Task
from services.analyzer.llm.prompts import CURRENT, available, prompt
from services.analyzer.llm.settings import LlmSettings, ModelPrice
from services.analyzer.llm.tasks import (
    build_request,
    parse_answer,
    reduce_groups,
    retry_request,
    with_provenance,
)
from shared.events import Chunk, PageSource

SCHEMA = {
    "type": "object",
    "properties": {"invoice_number": {"type": ["string", "null"]}, "total": {"type": "number"}},
    "required": ["invoice_number", "total"],
    "additionalProperties": False,
}
OPTIONS = AnalysisOptions(
    tasks=(Task.SUMMARY, Task.CLASSIFY, Task.EXTRACT),
    labels=("invoice", "letter"),
    schema=SCHEMA,
)


def chunk(text: str, start: int = 100) -> Chunk:
    return Chunk(
        chunk_id=uuid.uuid4(),
        page=3,
        index=1,
        source=PageSource.TEXT_LAYER,
        start=start,
        end=start + len(text),
        text=text,
    )


def test_every_current_prompt_exists_and_names_its_version() -> None:
    files = available()
    for name, version in CURRENT.items():
        assert version in files[name]
        assert prompt(name).label == f"{name}.v{version}"


def test_requests_carry_text_labels_schema_and_a_json_format() -> None:
    settings = LlmSettings()
    summary = build_request(Task.SUMMARY, "Pay 10 EUR.", OPTIONS, settings)
    assert "Pay 10 EUR." in summary.messages[-1]["content"]
    assert summary.response_format is None
    assert summary.max_tokens == settings.max_tokens_summary
    classify = build_request(Task.CLASSIFY, "Pay 10 EUR.", OPTIONS, settings)
    assert "invoice, letter" in classify.messages[-1]["content"]
    assert classify.response_format is not None
    schema = classify.response_format["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["invoice", "letter"]
    extract = build_request(Task.EXTRACT, "Pay 10 EUR.", OPTIONS, settings)
    assert extract.response_format is not None
    assert extract.response_format["json_schema"]["schema"] == SCHEMA
    assert json.dumps(SCHEMA, sort_keys=True) in extract.messages[-1]["content"]


def test_cache_key_changes_with_everything_that_decides_the_answer() -> None:
    settings = LlmSettings()
    base = build_request(Task.CLASSIFY, "text", OPTIONS, settings)
    other_labels = OPTIONS.model_copy(update={"labels": ("invoice", "memo")})
    assert base.cache_key("m") == build_request(Task.CLASSIFY, "text", OPTIONS, settings).cache_key(
        "m"
    )
    assert base.cache_key("m") != base.cache_key("other-model")
    assert base.cache_key("m") != build_request(
        Task.CLASSIFY, "text!", OPTIONS, settings
    ).cache_key("m")
    assert base.cache_key("m") != build_request(
        Task.CLASSIFY, "text", other_labels, settings
    ).cache_key("m")


def test_options_refuse_incomplete_tasks() -> None:
    with pytest.raises(ValueError, match="two labels"):
        AnalysisOptions(tasks=(Task.CLASSIFY,), labels=("only",))
    with pytest.raises(ValueError, match="JSON Schema"):
        AnalysisOptions(tasks=(Task.EXTRACT,))
    with pytest.raises(ValueError, match="not a JSON Schema"):
        AnalysisOptions(tasks=(Task.EXTRACT,), schema={"type": "object", "properties": 3})


def test_answers_are_parsed_and_checked() -> None:
    assert parse_answer(Task.SUMMARY, "  Short.  ", OPTIONS).value == "Short."
    assert parse_answer(Task.SUMMARY, "  ", OPTIONS).error == "the answer is empty"
    assert parse_answer(Task.CLASSIFY, '{"label": "letter"}', OPTIONS).value == "letter"
    assert "none of the labels" in str(parse_answer(Task.CLASSIFY, '{"label": "x"}', OPTIONS).error)
    good = parse_answer(Task.EXTRACT, '{"invoice_number": "A-7", "total": 12.5}', OPTIONS)
    assert good.value == {"invoice_number": "A-7", "total": 12.5}
    not_json = parse_answer(Task.EXTRACT, "{oops", OPTIONS)
    assert not_json.error is not None and "not JSON" in not_json.error
    wrong = parse_answer(Task.EXTRACT, '{"invoice_number": "A-7", "total": "many"}', OPTIONS)
    assert wrong.error is not None and wrong.error.startswith("total:")


def test_retry_request_shows_the_rejected_answer_and_the_error() -> None:
    first = build_request(Task.EXTRACT, "text", OPTIONS, LlmSettings())
    retry = retry_request(first, "{oops", "the answer is not JSON")
    assert retry.messages[: len(first.messages)] == first.messages
    assert retry.messages[-2] == {"role": "assistant", "content": "{oops"}
    assert "the answer is not JSON" in retry.messages[-1]["content"]
    assert retry.prompt_version == "extract.v1+extract_retry.v1"


def test_extracted_values_carry_page_chunk_and_page_offsets() -> None:
    piece = chunk("Invoice A-7 over EUR 12.5 is due.", start=100)
    placed = with_provenance({"invoice_number": "a-7", "total": 12.5, "note": None}, piece)
    assert placed["invoice_number"] == {
        "value": "a-7",
        "page": 3,
        "chunk_id": str(piece.chunk_id),
        "start": 108,
        "end": 111,
    }
    assert placed["total"]["start"] == 100 + piece.text.index("12.5")
    assert placed["note"]["start"] is None


def test_reduce_groups_keep_order_and_bound_size() -> None:
    summaries = ["a" * 40, "b" * 40, "c" * 40, "d" * 100]
    assert reduce_groups(summaries, 90) == [["a" * 40, "b" * 40], ["c" * 40], ["d" * 100]]
    assert reduce_groups(["x"], 10) == [["x"]]


def test_prices_count_cached_input_at_its_own_rate() -> None:
    price = ModelPrice(input_per_million=2, output_per_million=8, cached_input_per_million=1)
    assert price.cost_usd(1_000_000, 0) == pytest.approx(2)
    assert price.cost_usd(1_000_000, 500_000, cached_tokens=400_000) == pytest.approx(1.2 + 0.4 + 4)
    assert "demo price" in LlmSettings().price(LlmSettings().model).label
    with pytest.raises(ValueError, match="no price"):
        LlmSettings().price("unknown-model")


def test_retry_after_is_read_in_seconds_milliseconds_or_as_a_date() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "3"})) == 3
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "1500"})) == 1.5
    assert retry_after_seconds(httpx.Headers({})) is None
    dated = retry_after_seconds(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    assert dated == 0


def _status_error(status: int, message: str) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://x/v1/chat/completions")
    response = httpx.Response(status, request=request, headers={"Retry-After": "2"})
    return openai.APIStatusError(message, response=response, body={"error": {"message": message}})


def test_failures_are_sorted_into_what_the_engine_does() -> None:
    failure = classify_failure(_status_error(429, "slow down"))
    assert failure is not None and failure.kind is FailureKind.TRANSIENT
    assert failure.retry_after == 2 and not failure.maybe_billed
    assert classify_failure(_status_error(503, "x")).kind is FailureKind.TRANSIENT  # type: ignore[union-attr]
    assert classify_failure(_status_error(401, "bad key")).kind is FailureKind.MISCONFIGURED  # type: ignore[union-attr]
    assert classify_failure(_status_error(403, "no")).kind is FailureKind.MISCONFIGURED  # type: ignore[union-attr]
    too_long = classify_failure(
        _status_error(400, "Requested tokens (3000) exceed context window of 2048")
    )
    assert too_long is not None and too_long.kind is FailureKind.CONTEXT_TOO_LONG
    assert "3000" in too_long.reason
    assert classify_failure(_status_error(422, "bad field")).kind is FailureKind.REJECTED  # type: ignore[union-attr]
    timeout = classify_failure(openai.APITimeoutError(httpx.Request("POST", "http://x")))
    assert timeout is not None and timeout.maybe_billed
    assert classify_failure(ValueError("mine")) is None


def test_rate_window_waits_for_the_oldest_admissions_to_leave() -> None:
    window = [{"tokens": 100, "leaves_in": 10.0}, {"tokens": 100, "leaves_in": 20.0}]
    assert _window_wait([], 50, rpm=2, tpm=300) == 0
    assert _window_wait(window, 50, rpm=3, tpm=300) == 0
    assert _window_wait(window, 50, rpm=2, tpm=0) == pytest.approx(10.01)
    assert _window_wait(window, 150, rpm=0, tpm=300) == pytest.approx(10.01)
    assert _window_wait(window, 250, rpm=0, tpm=300) == pytest.approx(20.01)
    assert _window_wait(window, 900, rpm=0, tpm=300) == pytest.approx(20.01)  # alone, later


def test_budget_scopes_and_sentence() -> None:
    job = uuid.uuid4()
    scopes = budget_scopes(job, "acme", 0.5, 5.0, None)
    assert [s.scope.split(":")[0] for s in scopes] == ["job", "tenant-day"]
    assert budget_sentence("The budget", 0.5, 212, 300) == (
        "The budget of $0.50 was reached after 212 of 300 chunks"
    )
    # A budget under a cent keeps its digits (the demo's $0.005 read "$0.01").
    assert budget_sentence("The budget", 0.005, 9, 27) == (
        "The budget of $0.005 was reached after 9 of 27 chunks"
    )
    assert call_id(job, job, "summary", 1) == call_id(job, job, "summary", 1)
    assert call_id(job, job, "summary", 1) != call_id(job, job, "summary", 2)
