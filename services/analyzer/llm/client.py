"""The model client: the openai SDK's AsyncOpenAI against any OpenAI-compatible server, with the
SDK's own retries off (the engine's policy is the only retry loop), and the sorting of its
errors into what the engine does about them."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI

from services.analyzer.llm.settings import LlmSettings

# Chat-template tokens around each message (role markers, separators) and around the whole
# prompt (BOS, the assistant's opening); generous for ChatML and Llama-style templates.
TOKENS_PER_MESSAGE = 8
TOKENS_PER_PROMPT = 8


@dataclass(frozen=True)
class Answer:
    """One completed call: the text and the server's own usage figures."""

    text: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    latency_ms: float
    finish_reason: str | None


class FailureKind(StrEnum):
    TRANSIENT = "transient"  # 429, 5xx, timeout, reset: retry with backoff
    CONTEXT_TOO_LONG = "context_too_long"  # the chunk can never fit: fails with a reason
    REJECTED = "rejected"  # another 4xx: this request can never succeed
    MISCONFIGURED = "misconfigured"  # 401/403: stop calling the model


class MissingUsage(Exception):
    """An answer without usage figures: its cost is unknown, so it counts at its worst case."""


@dataclass(frozen=True)
class CallFailure:
    kind: FailureKind
    reason: str
    retry_after: float | None = None
    # True when the server may have done (and billed) the work although no answer arrived.
    maybe_billed: bool = False


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds (delta or HTTP date), or retry-after-ms; None when absent."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


_CONTEXT_WORDS = ("context", "too long", "maximum context", "exceed")


def classify_failure(exc: BaseException) -> CallFailure | None:
    """What an exception from a call means; None for anything that is not the server's answer."""
    if isinstance(exc, MissingUsage):
        return CallFailure(FailureKind.REJECTED, str(exc), maybe_billed=True)
    if isinstance(exc, json.JSONDecodeError):
        # A 200 whose body is not JSON: the work was probably done (and billed); ask again.
        return CallFailure(
            FailureKind.TRANSIENT, "the model server's answer was garbled", maybe_billed=True
        )
    if isinstance(exc, openai.APITimeoutError):
        return CallFailure(FailureKind.TRANSIENT, "the model server timed out", maybe_billed=True)
    if isinstance(exc, openai.APIConnectionError):
        return CallFailure(
            FailureKind.TRANSIENT, "the connection to the model server failed", maybe_billed=True
        )
    if not isinstance(exc, openai.APIStatusError):
        return None
    status = exc.status_code
    detail = _error_message(exc)
    if status in (401, 403):
        return CallFailure(
            FailureKind.MISCONFIGURED, f"the model server refused the key ({status})"
        )
    if status == 429 or status >= 500 or status == 408:
        return CallFailure(
            FailureKind.TRANSIENT,
            f"the model server answered {status}",
            retry_after=retry_after_seconds(exc.response.headers),
        )
    lowered = detail.lower()
    if status in (400, 413) and any(word in lowered for word in _CONTEXT_WORDS):
        return CallFailure(
            FailureKind.CONTEXT_TOO_LONG, f"The chunk is too long for the model: {detail}"
        )
    return CallFailure(FailureKind.REJECTED, f"The model server rejected the request: {detail}")


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
        if isinstance(body.get("message"), str):
            return str(body["message"])[:300]
    return str(exc.message)[:300]


class ModelClient:
    """One per engine; safe to share between concurrent calls."""

    def __init__(self, settings: LlmSettings) -> None:
        self.settings = settings
        self.openai = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key,
            max_retries=0,
            timeout=openai.Timeout(
                settings.request_timeout_seconds, connect=settings.connect_timeout_seconds
            ),
        )
        # llama.cpp's tokenizer lives beside /v1, at /extras/tokenize/count.
        root = settings.base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.AsyncClient(
            base_url=root,
            timeout=httpx.Timeout(
                settings.request_timeout_seconds, connect=settings.connect_timeout_seconds
            ),
        )
        self._server_tokenizer = settings.tokenizer == "server"
        self._system_counts: dict[str, int] = {}

    async def close(self) -> None:
        await self.openai.close()
        await self._http.aclose()

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        response_format: dict[str, Any] | None = None,
    ) -> Answer:
        extra: dict[str, Any] = {}
        if response_format is not None:
            extra["response_format"] = response_format
        started = time.perf_counter()
        response = await self.openai.chat.completions.create(
            model=model,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0,
            **extra,
        )
        latency_ms = (time.perf_counter() - started) * 1000
        usage = response.usage
        if usage is None:
            raise MissingUsage("the model server reported no usage")
        details = usage.prompt_tokens_details
        choice = response.choices[0]
        return Answer(
            text=choice.message.content or "",
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cached_tokens=(details.cached_tokens or 0) if details else 0,
            latency_ms=latency_ms,
            finish_reason=choice.finish_reason,
        )

    async def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Prompt tokens, never fewer than the server will count: each message's text counted
        alone (tokens never merge across the seams) plus the chat template's own tokens."""
        total = TOKENS_PER_PROMPT
        for message in messages:
            content = message["content"]
            if message["role"] == "system":  # the same few texts on every call: counted once
                if content not in self._system_counts:
                    self._system_counts[content] = await self._count_text(content)
                count = self._system_counts[content]
            else:
                count = await self._count_text(content)
            total += TOKENS_PER_MESSAGE + count
        return total

    async def _count_text(self, text: str) -> int:
        if self._server_tokenizer:
            try:
                response = await self._http.post("/extras/tokenize/count", json={"input": text})
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code == 200:
                return int(response.json()["count"])
            if response is not None and response.status_code in (404, 405):
                self._server_tokenizer = False  # not llama.cpp: count bytes from now on
        # A byte-level tokenizer's token covers at least one byte.
        return len(text.encode("utf-8"))
