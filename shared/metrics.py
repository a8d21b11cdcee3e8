"""Prometheus metrics shared by every service. Names start with docpipe_."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

MESSAGES = Counter(
    "docpipe_messages_total",
    "Messages handled, by consumer queue and outcome (received, acked, retried, dead_lettered)",
    ["queue", "outcome"],
)
HANDLER_SECONDS = Histogram(
    "docpipe_handler_seconds",
    "Time spent handling one message, by stage",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


def count_outcome(queue: str, outcome: str) -> None:
    MESSAGES.labels(queue=queue, outcome=outcome).inc()
