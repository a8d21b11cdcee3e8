"""Opaque keyset cursors over (created_at, job_id), newest first."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

_INVALID = "The cursor is not valid; use next_cursor from a previous page."


class InvalidCursor(ValueError):
    pass


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps({"t": created_at.isoformat(), "id": str(job_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """Inverse of encode_cursor; raises InvalidCursor for anything it did not produce."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        created_at = datetime.fromisoformat(data["t"])
        job_id = uuid.UUID(data["id"])
    except (binascii.Error, UnicodeError, ValueError, KeyError, TypeError) as exc:
        raise InvalidCursor(_INVALID) from exc
    if created_at.tzinfo is None:
        raise InvalidCursor(_INVALID)
    return created_at, job_id
