"""AI analysis in the event contract: what a job asks of the analysis (AnalysisOptions, carried
on DocumentUploaded and stored on the job row) and what each chunk's model calls came to
(LlmTaskResult, inside a chunk's Analysis). Bounded like every bus field (shared.bounds)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.bounds import Name, Reason

ANALYSIS_LABELS_MAX = 100
ANALYSIS_LABEL_MAX = 200
ANALYSIS_SCHEMA_MAX_CHARS = 20_000
ANALYSIS_VALUE_MAX_CHARS = 40_000  # one task's answer, as JSON
ANALYSIS_BUDGET_MAX_USD = 1_000_000.0
SUMMARY_MAX = 20_000


class AnalysisBackend(StrEnum):
    BUILTIN = "builtin"  # offline and free: language, keywords, entities
    LLM = "llm"  # an OpenAI-compatible model (services/analyzer/llm), besides the built-in


class AnalysisTask(StrEnum):
    SUMMARY = "summary"  # per chunk, then the document's (map-reduce)
    CLASSIFY = "classify"  # into the client's labels
    EXTRACT = "extract"  # the fields of the client's JSON Schema


class AnalysisOptions(BaseModel):
    """What a job asks of the analysis (the `analysis` option on submit, carried on
    DocumentUploaded and stored on the job row). A named profile is expanded by ingest before
    validation; `profile` keeps its name for the record."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    backend: AnalysisBackend = AnalysisBackend.BUILTIN
    tasks: tuple[AnalysisTask, ...] = Field(default=(AnalysisTask.SUMMARY,), max_length=3)
    labels: tuple[Annotated[str, Field(min_length=1, max_length=ANALYSIS_LABEL_MAX)], ...] = Field(
        default=(), max_length=ANALYSIS_LABELS_MAX
    )
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    model: Name | None = None  # None: the deployment's model
    max_cost_usd: float | None = Field(default=None, ge=0, le=ANALYSIS_BUDGET_MAX_USD)
    profile: Name | None = None

    @field_validator("json_schema")
    @classmethod
    def _bounded_schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(json.dumps(value)) > ANALYSIS_SCHEMA_MAX_CHARS:
            raise ValueError(f"the extract schema is over {ANALYSIS_SCHEMA_MAX_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _complete(self) -> AnalysisOptions:
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError("a task is named twice")
        if AnalysisTask.CLASSIFY in self.tasks and len(self.labels) < 2:
            raise ValueError("classify needs at least two labels")
        if AnalysisTask.EXTRACT in self.tasks:
            _check_extract_schema(self.json_schema)
        return self

    @property
    def uses_llm(self) -> bool:
        return self.backend == AnalysisBackend.LLM and bool(self.tasks)

    @property
    def wants_document_summary(self) -> bool:
        return self.uses_llm and AnalysisTask.SUMMARY in self.tasks

    def stored(self) -> dict[str, Any]:
        """The options as stored on the job row (by alias: `schema`)."""
        return self.model_dump(mode="json", by_alias=True)


def _check_extract_schema(schema: dict[str, Any] | None) -> None:
    if schema is None:
        raise ValueError("extract needs a JSON Schema of the fields")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"the extract schema is not a JSON Schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise ValueError('extract needs a schema of "type": "object" (its fields)')


class LlmTaskStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"  # with a reason
    OVER_BUDGET = "over_budget"  # not analysed: the budget had no room
    CANCELLED = "cancelled"


class LlmTaskResult(BaseModel):
    """One task's outcome for one chunk: summary text, label, or {field: {value, page,
    chunk_id, start, end}}; with its reason when not ok, and what it cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: LlmTaskStatus
    value: Any = None
    reason: Reason | None = None
    cost_usd: float = Field(default=0.0, ge=0)
    from_cache: bool = False

    @field_validator("value")
    @classmethod
    def _bounded_value(cls, value: Any) -> Any:
        if value is not None and len(json.dumps(value, default=str)) > ANALYSIS_VALUE_MAX_CHARS:
            raise ValueError(f"an answer is over {ANALYSIS_VALUE_MAX_CHARS} characters")
        return value
