"""The checked-in API documents are what the code generates (`make docs` regenerates them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts import gen_docs

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return gen_docs.generate()


@pytest.mark.parametrize("name", ["openapi-ingest.json", "openapi-progress.json"])
def test_checked_in_openapi_document_is_current(generated: dict[str, str], name: str) -> None:
    path = DOCS / name
    assert path.exists(), f"{path} missing: run `make docs`"
    assert json.loads(path.read_text()) == json.loads(generated[name]), (
        f"{name} is stale: run `make docs`"
    )
    assert path.read_text() == generated[name], f"{name} is not in canonical form: run `make docs`"


def test_openapi_documents_describe_the_public_routes(generated: dict[str, str]) -> None:
    ingest = json.loads(generated["openapi-ingest.json"])
    progress = json.loads(generated["openapi-progress.json"])
    assert ingest["openapi"].startswith("3.")
    assert "/v1/jobs" in ingest["paths"] and "post" in ingest["paths"]["/v1/jobs"]
    assert "/v1/jobs/{job_id}/progress" in progress["paths"]
    for doc in (ingest, progress):
        assert {"/healthz", "/readyz"} <= set(doc["paths"])
        assert "/metrics" not in doc["paths"]  # Prometheus text, not an API


def test_the_generator_covers_the_asyncapi_document(generated: dict[str, str]) -> None:
    # Its currency is tested in test_contract; here: the generator writes the same bytes.
    assert generated["asyncapi.json"] == (DOCS / "asyncapi.json").read_text()


def test_check_mode_reports_stale_documents(tmp_path: Path) -> None:
    assert gen_docs.main(["--out", str(tmp_path), "--check"]) == 1  # nothing there yet
    assert gen_docs.main(["--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(gen_docs.GENERATORS)
    assert gen_docs.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "openapi-progress.json").write_text("{}\n")
    assert gen_docs.stale(tmp_path) == ["openapi-progress.json"]
