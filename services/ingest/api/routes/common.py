"""What the job and the batch routes share: the hand-read request bodies (their OpenAPI
declaration and the streamed upload), the problem answers of an upload, the label filter and
the page of jobs."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import structlog
from fastapi import HTTPException, Query, Request, status
from fastapi.openapi.constants import REF_TEMPLATE
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from services.ingest.errors import UploadInterrupted
from services.ingest.labels import InvalidLabelFilter, parse_label_filters
from services.ingest.models import JobPage, JobView, Problem
from services.ingest.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.ingest.submit import UploadRequest

log = structlog.get_logger(__name__)

# ?label=key:value, repeatable.
LabelQuery = Annotated[
    list[str] | None,
    Query(max_length=400, description="key:value; repeat to require several labels."),
]

# The answers every upload route may give before a document is taken.
UPLOAD_PROBLEMS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem},
    403: {"model": Problem},
    408: {"model": Problem, "description": "The body stopped arriving"},
    # A hand-read body that is missing or fails its model: FastAPI's validation-error shape.
    422: {
        "description": "Validation Error",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}
        },
    },
}


def hand_read_body(models: dict[str, type[BaseModel]]) -> dict[str, Any]:
    """openapi_extra for a body read by hand (not parsed by FastAPI): each content type's
    schema is referenced by model name; services/ingest/app.py adds the models to the
    components."""
    content = {
        media_type: {"schema": {"$ref": REF_TEMPLATE.format(model=model.__name__)}}
        for media_type, model in models.items()
    }
    return {"requestBody": {"required": True, "content": content}}


async def body_of(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        log.info("client went away during upload")
        raise UploadInterrupted() from None


def upload_of(
    request: Request,
    tenant: str | None,
    correlation_id: str,
    idempotency_key: str | None = None,
) -> UploadRequest:
    """The request's streamed body with what the submit code needs of its headers."""
    return UploadRequest(
        tenant=tenant,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        body=body_of(request),
        idempotency_key=idempotency_key,
        correlation_id=correlation_id,
    )


def cursor_after(cursor: str | None) -> tuple[datetime, uuid.UUID] | None:
    """?cursor= as the (created_at, id) of the last row already seen, or 400 with the reason."""
    try:
        return decode_cursor(cursor) if cursor else None
    except InvalidCursor as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None


def label_filters(label: list[str] | None) -> dict[str, str]:
    """?label= parsed, or 400 with the reason."""
    try:
        return parse_label_filters(label or [])
    except InvalidLabelFilter as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None


def job_page(rows: Sequence[asyncpg.Record], limit: int) -> JobPage:
    """A page of jobs from up to limit + 1 rows (one more than shown: there is a next page)."""
    items = [JobView.from_row(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = encode_cursor(items[-1].created_at, items[-1].job_id)
    return JobPage(items=items, next_cursor=next_cursor)
