"""The per-job `pdf_tables` option (issue 14, item 4): absent, the deployment's
DOCPIPE_PDF_TABLES decides; given, the job's value does, for the child's spec, for the
duplicate key and for a replayed Idempotency-Key."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from services.extractor.service import build_spec
from services.ingest.dedup import dedup_key
from services.ingest.errors import IdempotencyConflict
from services.ingest.models import JobOptions, UploadOptions
from services.ingest.submit import replay
from services.ingest.upload import ReceivedUpload
from shared.events import DocumentUploaded
from shared.settings import Settings


@pytest.mark.parametrize(
    ("deployment", "job", "finds_tables"),
    [
        (False, None, False),
        (True, None, True),
        (False, True, True),
        (True, False, False),
    ],
)
def test_the_job_decides_when_it_says_and_the_deployment_when_it_does_not(
    tmp_path: Path, deployment: bool, job: bool | None, finds_tables: bool
) -> None:
    settings = Settings(pdf_tables=deployment)
    event = DocumentUploaded(
        job_id=uuid.uuid4(), document_uri="blob://sha256/" + "a" * 64, pdf_tables=job
    )
    assert build_spec(tmp_path / "d.pdf", "pdf", event, settings).pdf_tables is finds_tables


def test_the_option_is_part_of_the_duplicate_key_only_when_given() -> None:
    sha = "cd" * 32
    before = json.dumps(
        {"sha256": sha, "options": {"ocr": "auto", "password": False}}, sort_keys=True
    )
    # Absent: the key a submission had before the option existed.
    assert dedup_key(sha, JobOptions()) == hashlib.sha256(before.encode()).hexdigest()
    keys = {dedup_key(sha, JobOptions(pdf_tables=value)) for value in (None, True, False)}
    assert len(keys) == 3 and None not in keys


def test_a_replayed_key_needs_the_same_pdf_tables() -> None:
    digest = hashlib.sha256(b"doc").hexdigest()
    existing: dict[str, Any] = {
        "job_id": uuid.UUID(int=9), "status": "processing", "filename": "a.pdf",
        "format": "pdf", "size_bytes": 3, "sha256": digest, "ocr_mode": "auto", "priority": 0,
        "ocr_lang": None, "docx_comments": False, "pdf_tables": None,
    }  # fmt: skip
    upload = ReceivedUpload(f"blob://sha256/{digest}", 3, "a.pdf", None)
    assert replay(existing, upload, UploadOptions()).job_id == uuid.UUID(int=9)
    for value in (True, False):
        with pytest.raises(IdempotencyConflict):
            replay(existing, upload, UploadOptions(pdf_tables=value))
