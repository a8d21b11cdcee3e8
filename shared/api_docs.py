"""What every HTTP service's OpenAPI document says beyond what FastAPI infers from the routes:
the answers any route behind a key can give (401, 403), any route naming a resource by id
(404) and any route with a body (400). schemathesis holds the services to these documents
(tests/integration/test_api_fuzz.py), so an answer missing here is a failure there."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

PROBLEM_REF = "#/components/schemas/Problem"
# The body of every refusal but a 422: {"detail": sentence}.
PROBLEM_SCHEMA: dict[str, Any] = {
    "properties": {"detail": {"title": "Detail", "type": "string"}},
    "required": ["detail"],
    "title": "Problem",
    "type": "object",
}
KEY_REFUSALS = {
    "401": "No valid API key.",
    "403": "The key lacks the scope this call needs, or may not see what it names.",
}
NOT_FOUND = "No such resource, or another tenant's."
# FastAPI's own answer to a body it cannot decode (e.g. JSON that is not UTF-8).
UNREADABLE_BODY = "The body could not be parsed."


def problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": PROBLEM_REF}}},
    }


def add_refusals(schema: dict[str, Any]) -> dict[str, Any]:
    """Document the refusals in place (idempotent): 401 and 403 on every operation with a
    security requirement, 404 on every operation with a path parameter, 400 on every
    operation with a body."""
    schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(
        "Problem", PROBLEM_SCHEMA
    )
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            if operation.get("security"):
                for code, description in KEY_REFUSALS.items():
                    responses.setdefault(code, problem_response(description))
            if "{" in path:
                responses.setdefault("404", problem_response(NOT_FOUND))
            if "requestBody" in operation:
                responses.setdefault("400", problem_response(UNREADABLE_BODY))
    return schema


def document_refusals(app: FastAPI) -> None:
    """Wrap the app's OpenAPI generator with add_refusals (after every route is included:
    FastAPI builds the document on first request)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return add_refusals(generate())

    app.openapi = openapi  # type: ignore[method-assign]


def invalid_request(
    loc: tuple[str, ...], message: str, value: Any = None
) -> RequestValidationError:
    """A 422 in FastAPI's validation-error shape (the documented HTTPValidationError), for a
    check a route makes itself: every 422 of the API has one body shape."""
    return RequestValidationError(
        [{"type": "value_error", "loc": loc, "msg": message, "input": value}]
    )
