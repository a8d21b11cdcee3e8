"""The `analysis` option of a submit: profiles expanded, refusals as 422 sentences, and the
contract's bounds on the bus (shared.events.AnalysisOptions, LlmTaskResult)."""

from __future__ import annotations

import json
import uuid

import pytest
from pydantic import ValidationError

from services.ingest.analysis import parse_analysis
from services.ingest.errors import InvalidRequest
from shared.analysis import (
    ANALYSIS_LABELS_MAX,
    ANALYSIS_SCHEMA_MAX_CHARS,
    AnalysisBackend,
    AnalysisOptions,
    AnalysisTask,
    LlmTaskResult,
    LlmTaskStatus,
)
from shared.events import Analysis, DocumentUploaded

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}}}
PROFILES = {
    "invoices": {
        "backend": "llm",
        "tasks": ["classify", "extract"],
        "labels": ["invoice", "letter"],
        "schema": SCHEMA,
        "max_cost_usd": 0.5,
    }
}


def refusal(raw: object, profiles: dict[str, dict[str, object]] | None = None) -> str:
    with pytest.raises(InvalidRequest) as caught:
        parse_analysis(raw if isinstance(raw, str) else json.dumps(raw), profiles or PROFILES)
    return caught.value.detail


def test_no_analysis_means_the_deployments_default() -> None:
    assert parse_analysis(None, PROFILES) is None
    assert parse_analysis("", PROFILES) is None
    default = parse_analysis(None, {"default": {"backend": "llm", "tasks": ["summary"]}})
    assert default is not None and default.uses_llm and default.wants_document_summary


def test_a_full_request_is_taken_as_it_is() -> None:
    raw = {
        "backend": "llm",
        "tasks": ["summary", "classify", "extract"],
        "labels": ["a", "b"],
        "schema": SCHEMA,
        "model": None,
        "max_cost_usd": 0.5,
        "profile": None,
    }
    options = parse_analysis(json.dumps(raw), {})
    assert options is not None
    assert options.backend is AnalysisBackend.LLM
    assert options.tasks == (AnalysisTask.SUMMARY, AnalysisTask.CLASSIFY, AnalysisTask.EXTRACT)
    assert options.json_schema == SCHEMA and options.max_cost_usd == 0.5
    assert options.stored()["schema"] == SCHEMA  # stored by its wire name


def test_a_profile_expands_and_the_request_overrides_it() -> None:
    options = parse_analysis(json.dumps({"profile": "invoices", "max_cost_usd": 2}), PROFILES)
    assert options is not None
    assert options.tasks == (AnalysisTask.CLASSIFY, AnalysisTask.EXTRACT)
    assert options.labels == ("invoice", "letter") and options.max_cost_usd == 2
    assert options.profile == "invoices"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ({"profile": "nope"}, "Unknown analysis profile 'nope'"),
        ({"backend": "llm", "tasks": ["translate"]}, "analysis.tasks.0"),
        ({"backend": "llm", "tasks": ["classify"]}, "classify needs at least two labels"),
        ({"backend": "llm", "tasks": ["classify"], "labels": ["only"]}, "two labels"),
        ({"backend": "llm", "tasks": ["extract"]}, "extract needs a JSON Schema"),
        (
            {"backend": "llm", "tasks": ["extract"], "schema": {"type": "banana"}},
            "is not a JSON Schema",
        ),
        (
            {"backend": "llm", "tasks": ["extract"], "schema": {"type": "string"}},
            '"type": "object"',
        ),
        ({"backend": "llm", "max_cost_usd": -1}, "analysis.max_cost_usd"),
        ({"backend": "gpt"}, "analysis.backend"),
        ({"backend": "llm", "colour": "red"}, "analysis.colour"),
        ({"backend": "llm", "tasks": ["summary", "summary"]}, "named twice"),
        ("{not json", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_refusals_say_what_is_wrong(raw: object, words: str) -> None:
    detail = refusal(raw)
    assert words in detail, detail


def test_a_refusal_is_a_422_body_naming_the_member() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_analysis(json.dumps({"backend": "llm", "max_cost_usd": -1}), {})
    (error,) = caught.value.errors
    assert error["loc"] == ("body", "analysis", "max_cost_usd")
    assert error["msg"].endswith(".")


def test_the_contract_bounds_labels_and_schema() -> None:
    too_many = [f"l{i}" for i in range(ANALYSIS_LABELS_MAX + 1)]
    with pytest.raises(ValidationError):
        AnalysisOptions.model_validate(
            {"backend": "llm", "tasks": ["classify"], "labels": too_many}
        )
    big = {"type": "object", "description": "x" * ANALYSIS_SCHEMA_MAX_CHARS}
    with pytest.raises(ValidationError, match="over"):
        AnalysisOptions.model_validate({"tasks": ["extract"], "schema": big})
    with pytest.raises(ValidationError):
        LlmTaskResult(status=LlmTaskStatus.OK, value="x" * 50_000)


def test_the_options_travel_on_document_uploaded() -> None:
    options = AnalysisOptions.model_validate(PROFILES["invoices"])
    event = DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://x", analysis=options)
    again = DocumentUploaded.model_validate_json(event.model_dump_json(by_alias=True))
    assert again.analysis == options
    plain = DocumentUploaded.model_validate_json(event.model_dump_json())
    assert plain.analysis == options  # populate_by_name: either spelling of the schema


def test_a_chunk_analysis_carries_llm_results_beside_the_builtin_fields() -> None:
    analysis = Analysis(
        analyzer="builtin/1",
        language="en",
        word_count=3,
        keywords=[],
        entities=[],
        cost_usd=0.0012,
        tokens=140,
        llm={
            AnalysisTask.SUMMARY: LlmTaskResult(status=LlmTaskStatus.OK, value="A letter."),
            AnalysisTask.CLASSIFY: LlmTaskResult(
                status=LlmTaskStatus.OVER_BUDGET, reason="The budget of $0.50 was reached"
            ),
        },
    )
    dumped = analysis.model_dump(mode="json")
    assert dumped["llm"]["classify"]["status"] == "over_budget"
    assert Analysis.model_validate(dumped) == analysis
