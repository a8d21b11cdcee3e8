"""A small JSON request body read by hand: the routes that also take a streamed multipart
form (POST /v1/jobs, POST /v1/batches) choose by Content-Type, so FastAPI parses neither."""

from __future__ import annotations

from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from services.ingest.errors import BodyTooLarge, InvalidRequest

# 1,000 URLs of a few hundred characters each, with room to spare.
MAX_JSON_BODY_BYTES = 4 * 1024 * 1024

Model = TypeVar("Model", bound=BaseModel)


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def json_body(request: Request, model: type[Model]) -> Model:
    """The body validated as `model`; 413 past MAX_JSON_BODY_BYTES, 422 when invalid."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BODY_BYTES:
            raise BodyTooLarge(MAX_JSON_BODY_BYTES)
        chunks.append(chunk)
    try:
        return model.model_validate_json(b"".join(chunks))
    except ValidationError as exc:
        raise InvalidRequest(
            [
                {**e, "loc": ("body", *e["loc"]), "input": _readable(e["input"])}
                for e in exc.errors(include_url=False)
            ]
        ) from None


def _readable(value: object) -> object:
    """An error's input as JSON can carry it: invalid JSON comes back as the raw bytes, which
    need not be UTF-8 (the encoder's strict decode of them was a 500)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
