"""Settings of the LLM analysis engine, read from DOCPIPE_LLM_* environment variables.

Kept apart from shared.settings.Settings so the engine can be configured (and tested) on its own;
the analyzer service builds one `LlmSettings()` beside its `Settings`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# The model llama.cpp's server serves in the demo and the tests (scripts/model_server.py).
LOCAL_MODEL = "smollm2-135m-instruct"


class ModelPrice(BaseModel):
    """USD per million tokens. `label` says where the figure comes from (a contract, a price
    page, or "demo price": made up, so the local model's jobs show a cost)."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)
    cached_input_per_million: float = Field(ge=0)
    label: str = ""

    def cost_usd(self, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
        """Cost of one call; cached prompt tokens are part of input_tokens, billed at their rate."""
        cached = min(cached_tokens, input_tokens)
        return (
            (input_tokens - cached) * self.input_per_million
            + cached * self.cached_input_per_million
            + output_tokens * self.output_per_million
        ) / 1_000_000


class ModelLimits(BaseModel):
    """Shared by every analyzer process calling the model (0 = no limit)."""

    requests_per_minute: int = Field(default=0, ge=0)
    tokens_per_minute: int = Field(default=0, ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    return {
        LOCAL_MODEL: ModelPrice(
            input_per_million=0.50,
            output_per_million=1.50,
            cached_input_per_million=0.25,
            label="demo price (the local model costs nothing; this figure is made up)",
        )
    }


class LlmSettings(BaseSettings):
    """Nested values (prices, limits) are JSON in the environment, e.g.
    DOCPIPE_LLM_PRICES='{"gpt-4o-mini": {"input_per_million": 0.15, ...}}'."""

    model_config = SettingsConfigDict(env_prefix="DOCPIPE_LLM_", extra="ignore")

    # Where the OpenAI-compatible server is (OpenAI, Azure, vLLM, Ollama, llama.cpp, LiteLLM).
    base_url: str = "http://127.0.0.1:9180/v1"
    api_key: str = "local"
    model: str = LOCAL_MODEL
    connect_timeout_seconds: float = 5.0
    request_timeout_seconds: float = 60.0

    prices: dict[str, ModelPrice] = Field(default_factory=_default_prices)
    limits: dict[str, ModelLimits] = Field(default_factory=dict)
    # The window the limits are counted over ("per minute"; tests shorten it).
    rate_window_seconds: float = Field(default=60.0, gt=0)

    # Calls in flight per analyzer process (they overlap across chunks and jobs).
    concurrency: int = Field(default=8, ge=1)
    # Attempts of one call on transient failures (429, 5xx, timeout, reset), with jittered
    # exponential backoff between them that never waits less than a Retry-After.
    max_attempts: int = Field(default=4, ge=1)
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 30.0

    # Worst case of an answer, per task (what a reservation counts beside the prompt).
    max_tokens_summary: int = 120
    max_tokens_classify: int = 20
    max_tokens_extract: int = 256
    # Document summaries are reduced from chunk summaries in groups of at most this many chars.
    reduce_group_chars: int = 2400

    # How prompt tokens are counted before a call: "server" asks llama.cpp's /extras/tokenize
    # (falling back to "bytes" where the server has no such endpoint); "bytes" counts UTF-8
    # bytes, which never undercounts a byte-level BPE tokenizer.
    tokenizer: Literal["server", "bytes"] = "server"

    # Per-tenant budgets in USD (None = no limit); a job's own max_cost_usd comes on submit.
    tenant_daily_budget_usd: float | None = None
    tenant_monthly_budget_usd: float | None = None
    # How often a running analysis asks whether its job was cancelled.
    cancel_poll_seconds: float = 0.5

    def price(self, model: str) -> ModelPrice:
        try:
            return self.prices[model]
        except KeyError:
            raise ValueError(
                f"no price for model {model!r}: add it to DOCPIPE_LLM_PRICES"
            ) from None

    def limits_for(self, model: str) -> ModelLimits:
        return self.limits.get(model, ModelLimits())

    def max_tokens(self, task: str) -> int:
        return {
            "summary": self.max_tokens_summary,
            "classify": self.max_tokens_classify,
            "extract": self.max_tokens_extract,
        }.get(task, self.max_tokens_summary)
