"""The bus: typed subscriptions, one consumer pipeline (middleware.py), publishing with
confirms; on RabbitMQ (Bus) or in memory for tests (MemoryBus).

Handlers receive the event type they subscribed with and either return (ack), raise
PermanentError (the job fails with that reason), raise JobGone (dropped), or raise anything
else (retried through the delay queues, then dead-lettered with the error text).
"""

from __future__ import annotations

from .amqp import Bus
from .consumer import AckCoalescer
from .core import BusCore
from .memory import MemoryBus
from .message import (
    H_ATTEMPT,
    H_CORRELATION,
    H_ERROR,
    H_EVENT,
    H_QUEUE,
    H_REASON,
    Delivery,
    Handler,
    InboundMessage,
    RawHandler,
    correlation_id,
)

__all__ = [
    "H_ATTEMPT",
    "H_CORRELATION",
    "H_ERROR",
    "H_EVENT",
    "H_QUEUE",
    "H_REASON",
    "AckCoalescer",
    "Bus",
    "BusCore",
    "Delivery",
    "Handler",
    "InboundMessage",
    "MemoryBus",
    "RawHandler",
    "correlation_id",
]
