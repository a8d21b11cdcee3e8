"""The seam between the analyzer service and whatever analyses a chunk.

A backend is anything with a `name` and an async `analyze(text) -> Analysis`. The built-in one
is offline and free; DOCPIPE_ANALYZER picks it by name. The LLM is not a backend here: a job
that asks for it (its `analysis` options) gets the engine's results beside the built-in
fields (services/analyzer/runtime.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from shared.events import Analysis

ENV_VAR = "DOCPIPE_ANALYZER"
DEFAULT_ANALYZER = "builtin"


@runtime_checkable
class ChunkAnalyzer(Protocol):
    name: str

    async def analyze(self, text: str) -> Analysis: ...


def _builtin() -> ChunkAnalyzer:
    from services.analyzer.builtin import BuiltinAnalyzer

    return BuiltinAnalyzer()


_REGISTRY: dict[str, Callable[[], ChunkAnalyzer]] = {"builtin": _builtin}


def register_analyzer(name: str, factory: Callable[[], ChunkAnalyzer]) -> None:
    _REGISTRY[name] = factory


def available_analyzers() -> list[str]:
    return sorted(_REGISTRY)


def get_analyzer(name: str | None = None) -> ChunkAnalyzer:
    """The backend called `name`, else the one DOCPIPE_ANALYZER names, else the built-in."""
    chosen = (name or os.environ.get(ENV_VAR) or DEFAULT_ANALYZER).strip()
    try:
        factory = _REGISTRY[chosen]
    except KeyError:
        known = ", ".join(available_analyzers())
        raise ValueError(f"unknown analyzer {chosen!r} ({ENV_VAR}); available: {known}") from None
    return factory()
