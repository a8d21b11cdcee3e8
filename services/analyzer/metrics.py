"""Prometheus metrics of the analyzer service."""

from __future__ import annotations

from prometheus_client import Counter

CHUNKS_ANALYZED = Counter(
    "docpipe_chunks_analyzed_total", "Chunks analysed, by backend", ["analyzer"]
)
