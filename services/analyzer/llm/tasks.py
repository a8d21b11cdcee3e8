"""The three tasks as pure functions: the request each chunk makes, and what its answer means.

summary: one per chunk, then the document's reduced from the chunk summaries (map-reduce);
classify: into the client's labels (a JSON answer constrained to them); extract: fields by the
client's JSON Schema, sent as `response_format` and validated here again, because not every
server enforces it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import jsonschema

from services.analyzer.llm.models import AnalysisOptions, ExtractedValue, Task
from services.analyzer.llm.prompts import Prompt, prompt
from services.analyzer.llm.settings import LlmSettings
from shared.events import Chunk


@dataclass(frozen=True)
class TaskRequest:
    """One call as sent: the prompt (its version goes on the ledger), the messages, and what
    bounds the answer."""

    task: str
    prompt: Prompt
    messages: list[dict[str, str]]
    max_tokens: int
    response_format: dict[str, Any] | None = None
    followed_by: Prompt | None = None  # a follow-up template appended (the extract retry)

    @property
    def prompt_version(self) -> str:
        """What the ledger records: "extract.v1", or "extract.v1+extract_retry.v1"."""
        if self.followed_by is None:
            return self.prompt.label
        return f"{self.prompt.label}+{self.followed_by.label}"

    def cache_key(self, model: str) -> str:
        """Everything that decides the answer: model, prompt version, messages (text, labels,
        schema), the bound on the answer and its format."""
        material = json.dumps(
            [model, self.prompt_version, self.messages, self.max_tokens, self.response_format],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(material.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ParsedAnswer:
    value: Any = None
    error: str | None = None  # why the answer is not usable (extract retries once with it)


def json_schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def classify_schema(labels: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def build_request(
    task: Task, text: str, options: AnalysisOptions, settings: LlmSettings
) -> TaskRequest:
    max_tokens = settings.max_tokens(task)
    if task is Task.SUMMARY:
        chosen = prompt("summary_chunk")
        return TaskRequest(task, chosen, chosen.messages(text=text), max_tokens)
    if task is Task.CLASSIFY:
        chosen = prompt("classify")
        return TaskRequest(
            task,
            chosen,
            chosen.messages(text=text, labels=", ".join(options.labels)),
            max_tokens,
            json_schema_format("classification", classify_schema(options.labels)),
        )
    assert options.json_schema is not None  # AnalysisOptions checks extract has a schema
    chosen = prompt("extract")
    schema_text = json.dumps(options.json_schema, sort_keys=True)
    return TaskRequest(
        task,
        chosen,
        chosen.messages(text=text, schema=schema_text),
        max_tokens,
        json_schema_format("fields", options.json_schema),
    )


def retry_request(request: TaskRequest, answer: str, error: str) -> TaskRequest:
    """The extract request again, with the rejected answer and why it was rejected."""
    retry = prompt("extract_retry")
    messages = [
        *request.messages,
        {"role": "assistant", "content": answer},
        *retry.messages(error=error),
    ]
    return TaskRequest(
        request.task,
        request.prompt,
        messages,
        request.max_tokens,
        request.response_format,
        followed_by=retry,
    )


def reduce_request(summaries: list[str], settings: LlmSettings) -> TaskRequest:
    chosen = prompt("summary_reduce")
    text = "\n".join(f"- {s}" for s in summaries)
    return TaskRequest(
        "summary_document", chosen, chosen.messages(text=text), settings.max_tokens_summary
    )


def reduce_groups(summaries: list[str], max_chars: int) -> list[list[str]]:
    """Consecutive summaries in groups of at most max_chars (a summary longer than that alone)."""
    groups: list[list[str]] = []
    size = 0
    for summary in summaries:
        if groups and size + len(summary) <= max_chars:
            groups[-1].append(summary)
            size += len(summary)
        else:
            groups.append([summary])
            size = len(summary)
    return groups


def parse_answer(task: str, text: str, options: AnalysisOptions) -> ParsedAnswer:
    if task not in (Task.CLASSIFY, Task.EXTRACT):  # a summary of a chunk, group or document
        summary = text.strip()
        return ParsedAnswer(summary) if summary else ParsedAnswer(error="the answer is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedAnswer(error=f"the answer is not JSON ({exc.msg} at {exc.pos})")
    if task == Task.CLASSIFY:
        label = data.get("label") if isinstance(data, dict) else None
        if label not in options.labels:
            return ParsedAnswer(error=f"the answer {text[:80]!r} names none of the labels")
        return ParsedAnswer(label)
    assert options.json_schema is not None
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(options.json_schema).iter_errors(data)
    )
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "the answer"
        return ParsedAnswer(error=f"{where}: {error.message}")
    return ParsedAnswer(data)


def with_provenance(fields: dict[str, Any], chunk: Chunk) -> dict[str, dict[str, Any]]:
    """Each extracted field with its page, chunk and offsets in the page's text (found verbatim,
    case-insensitively, in the chunk; None when the model reworded it)."""
    lowered = chunk.text.lower()
    out: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        start: int | None = None
        end: int | None = None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            needle = str(value).strip().lower()
            at = lowered.find(needle) if needle else -1
            if at >= 0:
                start, end = chunk.start + at, chunk.start + at + len(needle)
        out[name] = ExtractedValue(
            value=value, page=chunk.page, chunk_id=chunk.chunk_id, start=start, end=end
        ).model_dump(mode="json")
    return out
