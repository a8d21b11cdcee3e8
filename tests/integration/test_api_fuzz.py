"""schemathesis against both OpenAPI documents, on the running stack (issue 10, item 10).

The documents are the committed ones (docs/openapi-*.json, which test_api_docs holds equal to
what the code generates), so what is fuzzed is what clients are told. Every operation gets a
bounded number of generated requests, valid and invalid (schemathesis' positive and negative
modes), and each answer must:
- not be a 5xx;
- have a documented status code, content type and body schema.
Separately, every operation the documents put behind a key answers 401 without one and with a
wrong one, and the only operations without a key are the documented public ones.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCUMENTS = {"ingest": DOCS / "openapi-ingest.json", "progress": DOCS / "openapi-progress.json"}
ingest_schema = schemathesis.openapi.from_path(DOCUMENTS["ingest"])
progress_schema = schemathesis.openapi.from_path(DOCUMENTS["progress"])
# Admin keys reach routes a tenant's key is refused (403) before any input is read. Only the
# read-only ones are fuzzed as admin: the session's stack is shared, and a generated bulk
# replay or purge would act on other tests' dead letters.
progress_admin_reads = progress_schema.include(method="GET", path_regex="^/v1/(admin|dead-letters)")

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Bounded: 39 operations at these numbers take ~40 s on a 2-core machine; examples found
# failing are not stored between runs (database=None) so every run is the same size.
BOUNDED = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
# Answered without a key: the probes, the metrics and the documents themselves.
PUBLIC_OPERATIONS = {("GET", "/healthz"), ("GET", "/readyz")}
PUBLIC_UNDOCUMENTED = ["/metrics", "/openapi.json"]


def base_url(stack: StackClient, service: str) -> str:
    return stack.stack.url(service)


@ingest_schema.parametrize()
@BOUNDED
def test_ingest_answers_as_documented(case: schemathesis.Case, stack: StackClient) -> None:
    case.call_and_validate(
        base_url=base_url(stack, "ingest"), headers=stack.headers(), checks=CHECKS, timeout=30
    )


@progress_schema.parametrize()
@BOUNDED
def test_progress_answers_as_documented(case: schemathesis.Case, stack: StackClient) -> None:
    case.call_and_validate(
        base_url=base_url(stack, "progress"), headers=stack.headers(), checks=CHECKS, timeout=30
    )


@progress_admin_reads.parametrize()
@BOUNDED
def test_progress_admin_reads_answer_as_documented(
    case: schemathesis.Case, stack: StackClient
) -> None:
    case.call_and_validate(
        base_url=base_url(stack, "progress"),
        headers=stack.headers(stack.admin_key),
        checks=CHECKS,
        timeout=30,
    )


def operations(service: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, operation) of every operation in the service's document."""

    document = json.loads(DOCUMENTS[service].read_text())
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


def concrete(path: str) -> str:
    """The path with each parameter filled in: a fresh UUID (ids are UUIDs or integers; an
    integer parameter gets 1)."""
    for name in ("job_id", "batch_id"):
        path = path.replace("{" + name + "}", str(uuid.uuid4()))
    for name in ("dead_letter_id", "delivery_id"):
        path = path.replace("{" + name + "}", "1")
    return path


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
async def test_every_documented_operation_behind_a_key_refuses_callers_without_one(
    stack: StackClient, service: str
) -> None:
    base = base_url(stack, service)
    public: set[tuple[str, str]] = set()
    refused = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for method, path, operation in operations(service):
            if not operation.get("security"):
                public.add((method, path))
                continue
            url = concrete(path)
            assert "{" not in url, f"fill in the parameter of {path}"
            for headers in ({}, stack.headers("not-a-key"), {"Authorization": "Basic eDp5"}):
                response = await client.request(method, url, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers["www-authenticate"] == "Bearer"
                assert set(operation["responses"]) >= {"401", "403"}, (method, path)
            refused += 1
        for path in PUBLIC_UNDOCUMENTED:
            assert (await client.get(path)).status_code == 200, path
    assert public == PUBLIC_OPERATIONS
    assert refused >= 10
