"""The dedup key (which submissions share a result), the sentences a duplicate fails with,
and the blob store's delete (what retention relies on)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from services.ingest.dedup import dedup_key
from services.ingest.models import UploadOptions
from services.progress.deduplicated import source_failed_reason
from shared.blobstore import BlobStore
from shared.events import JobDeduplicated, JobStatus, OcrMode, parse_event

SHA = "ab" * 32


def key(**options: object) -> str:
    return dedup_key(SHA, UploadOptions.model_validate(options))


def test_options_that_do_not_shape_the_result_share_a_key() -> None:
    base = key()
    assert key(priority=9) == base
    assert key(force=True) == base
    assert key(keep_images=True) == base


def test_content_and_ocr_mode_make_other_work() -> None:
    base = key()
    assert key(ocr=OcrMode.ALWAYS) != base
    assert dedup_key("cd" * 32, UploadOptions()) != base


def test_a_submission_with_a_password_is_never_deduplicated() -> None:
    # The password is not stored, so a key could not tell a wrong password from the right one.
    assert key(password="secret") is None
    assert key(password="") is None
    assert key() is not None


def test_a_duplicate_fails_with_a_sentence_naming_its_source() -> None:
    source = uuid.uuid4()
    assert str(source) in source_failed_reason(source, None, None)
    assert "deleted" in source_failed_reason(source, None, None)
    assert "cancelled" in source_failed_reason(source, JobStatus.CANCELLED, None)
    failed = source_failed_reason(source, JobStatus.FAILED, "The PDF is encrypted.")
    assert failed.endswith("failed: The PDF is encrypted.")


def test_job_deduplicated_round_trips_on_the_bus() -> None:
    event = JobDeduplicated(job_id=uuid.uuid4(), source_job_id=uuid.uuid4())
    assert parse_event(event.routing_key, event.model_dump_json()) == event


def test_blob_delete_leaves_a_file_written_lately(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    uri = store.put_bytes(b"an image")
    assert not store.delete(uri, min_age_seconds=60)
    assert store.exists(uri)
    old = time.time() - 120
    os.utime(store.local_path(uri), (old, old))
    assert store.delete(uri, min_age_seconds=60)
    assert not store.exists(uri)
    assert not store.delete(uri)  # already gone
