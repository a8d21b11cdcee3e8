"""Prometheus metrics shared by every service. Names start with docpipe_.

The bus's pipeline reports each message's outcome and handling time through hooks
(Bus.on_outcome, read by the CountOutcomes step; Bus.on_handled, by TimeHandler);
create_service_app wires them to the functions here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram

OUTCOMES = ("received", "acked", "retried", "dead_lettered")

MESSAGES = Counter(
    "docpipe_messages_total",
    "Messages handled, by consumer queue and outcome (received, acked, retried, dead_lettered)",
    ["queue", "outcome"],
)
DEAD_LETTERS = Counter(
    "docpipe_dead_letters_total",
    "Messages this service moved to a dead-letter queue, by consumer queue",
    ["queue"],
)
HANDLER_SECONDS = Histogram(
    "docpipe_handler_seconds",
    "Time spent handling one message, by stage (the consumer group)",
    ["stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)


# Labelled children, looked up once: labels() costs more than inc() itself, and these run
# for every message (thousands a second in the progress service).
@functools.cache
def _messages(queue: str, outcome: str) -> Any:
    return MESSAGES.labels(queue=queue, outcome=outcome)


@functools.cache
def _handler_seconds(stage: str) -> Any:
    return HANDLER_SECONDS.labels(stage=stage)


def count_outcome(queue: str, outcome: str) -> None:
    _messages(queue, outcome).inc()
    if outcome == "dead_lettered":
        DEAD_LETTERS.labels(queue=queue).inc()


def observe_handler(stage: str, seconds: float) -> None:
    _handler_seconds(stage).observe(seconds)


def init_consumer_metrics(groups: Iterable[str]) -> None:
    """Create every label combination a consumer will report, at zero: a series that only
    appears after its first event breaks rate() and hides 'never happened' from alerts."""
    for group in groups:
        for outcome in OUTCOMES:
            MESSAGES.labels(queue=group, outcome=outcome)
        DEAD_LETTERS.labels(queue=group)
        HANDLER_SECONDS.labels(stage=group)
