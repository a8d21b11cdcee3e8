"""What every store module shares: the connection type, NUL cleaning, delta adding."""

from __future__ import annotations

import uuid
from typing import Any, TypeAlias

import asyncpg

from services.progress.arithmetic import Counts
from shared.events import ACTIVE_STATUSES

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
Deltas = dict[uuid.UUID, Counts]
ACTIVE = sorted(ACTIVE_STATUSES)


def clean(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL characters."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def add_delta(deltas: Deltas, job_id: uuid.UUID, delta: Counts) -> None:
    deltas[job_id] = deltas.get(job_id, Counts()).plus(delta)
