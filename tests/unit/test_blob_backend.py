"""The setting that chooses the blob backend: the folder by default, S3 only with a bucket."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.blob_s3 import S3BlobStore
from shared.blobstore import BlobStore, open_blob_store
from shared.settings import Settings


def test_the_local_folder_is_the_default(tmp_path: Path) -> None:
    store = open_blob_store(Settings(blob_dir=tmp_path))
    assert isinstance(store, BlobStore)
    assert store.child_dir == store.staging_dir == tmp_path.resolve()


def test_s3_needs_a_bucket(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs the bucket's name in DOCPIPE_S3_BUCKET"):
        Settings(blob_dir=tmp_path, blob_backend="s3")


def test_s3_children_write_outside_the_cache(tmp_path: Path) -> None:
    settings = Settings(
        blob_dir=tmp_path, blob_backend="s3", s3_bucket="b", s3_endpoint="http://127.0.0.1:9"
    )
    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert store.staging_dir == tmp_path.resolve()
    # What the children write waits in a folder eviction does not scan, until it is uploaded.
    assert store.child_dir == tmp_path.resolve() / ".outgoing"
    assert store.cache.entries() == []
