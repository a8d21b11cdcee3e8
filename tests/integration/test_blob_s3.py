"""The S3 blob backend against a real S3-compatible HTTP server (moto's): the same URIs as the
local folder, shared between machines (two caches on one bucket), a hash check on download,
the purge's minimum age, and a 100 MB upload and download in bounded memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.blob_s3 import KEY_PREFIX, BlobCorrupted, S3BlobStore
from shared.blobstore import BlobNotFound, BlobStore, open_blob_store
from tests.integration.blob_server import S3Server, moto_server

ROOT = Path(__file__).resolve().parents[2]
PART_MIB = 5
PARTS_IN_FLIGHT = 2


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


def machine(s3: S3Server, bucket: str, cache: Path, **kw: object) -> S3BlobStore:
    store = open_blob_store(s3.settings(bucket, cache, **kw))
    assert isinstance(store, S3BlobStore)
    return store


def test_put_read_exists_delete(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = machine(s3, bucket, tmp_path / "cache")
    uri = store.put_bytes(b"hello")
    # The same URI as the local folder gives the same bytes: the backend changes no URI.
    assert uri == BlobStore(tmp_path / "local").put_bytes(b"hello")
    assert s3.keys(bucket) == [KEY_PREFIX + hashlib.sha256(b"hello").hexdigest()]
    assert store.exists(uri)
    assert store.read_bytes(uri) == b"hello"
    assert store.delete(uri)
    assert not store.exists(uri)
    assert s3.keys(bucket) == []
    assert not store.delete(uri)  # already gone
    with pytest.raises(BlobNotFound):
        store.read_bytes(uri)
    assert not store.exists("blob://sha256/../../etc/passwd")
    with pytest.raises(ValueError):
        store.read_bytes("blob://sha256/../../etc/passwd")
    assert not list((tmp_path / "cache").glob(".incoming-*"))


def test_two_machines_share_blobs(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    first = machine(s3, bucket, tmp_path / "a")
    second = machine(s3, bucket, tmp_path / "b")
    uri = first.put_bytes(b"written on machine a")
    with second.pinned(uri) as path:  # downloaded into b's cache
        assert path.is_relative_to(tmp_path / "b")
        assert path.read_bytes() == b"written on machine a"
    # Deleted through b: a's cached copy stays until a deletes or evicts it, but the store
    # (what exists() and every other machine's download read) no longer has it.
    assert second.delete(uri)
    assert not first.exists(uri)


def test_min_age_keeps_a_fresh_object(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = machine(s3, bucket, tmp_path / "cache")
    uri = store.put_bytes(b"just written")
    assert not store.delete(uri, min_age_seconds=3600)
    assert store.exists(uri)
    assert store.delete(uri, min_age_seconds=0)


def test_a_child_blob_is_pushed_to_the_store(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    store = machine(s3, bucket, tmp_path / "cache")
    uri = BlobStore(store.child_dir).put_bytes(b"a rendered page image")
    assert not store.exists(uri)
    store.push(uri)
    assert store.exists(uri)
    digest = uri.rsplit("/", 1)[1]
    assert not BlobStore(store.child_dir).path_for(digest).exists()  # moved into the cache
    assert store.cache.path_for(digest).exists()
    store.push(uri)  # a second push of the same bytes (another page): already there
    with pytest.raises(BlobNotFound):
        store.push("blob://sha256/" + "0" * 64)


def test_a_corrupted_object_is_refused(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    writer = machine(s3, bucket, tmp_path / "a")
    uri = writer.put_bytes(b"original")
    digest = uri.rsplit("/", 1)[1]
    import obstore

    obstore.put(writer.store, KEY_PREFIX + digest, b"tampered")
    reader = machine(s3, bucket, tmp_path / "b")
    with pytest.raises(BlobCorrupted):
        reader.read_bytes(uri)
    assert not list((tmp_path / "b").rglob(digest))  # nothing cached


# Runs in a fresh interpreter, sampling its resident memory every few milliseconds while it
# uploads 100 MiB from a generator, downloads it into an empty cache, and, as the control that
# shows the probe sees a whole body in memory, reads the file into one bytes object.
MEMORY_PROBE = """
import hashlib, json, threading, time
from shared.blobstore import open_blob_store
from shared.settings import Settings

def rss_kib():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4

class Peak:
    def __enter__(self):
        self.base, self.peak, self.done = rss_kib(), 0, False
        self.thread = threading.Thread(target=self.sample); self.thread.start()
        return self
    def sample(self):
        while not self.done:
            self.peak = max(self.peak, rss_kib()); time.sleep(0.002)
    def __exit__(self, *exc):
        self.done = True; self.thread.join()
        self.growth = self.peak - self.base

store = open_blob_store(Settings())  # DOCPIPE_* from the environment
store.put_bytes(b"warm-up")  # the client, its TLS and HTTP stacks, loaded before measuring
block = bytes(range(256)) * 4096  # 1 MiB
hasher = hashlib.sha256()
def chunks():
    for n in range(100):
        chunk = n.to_bytes(4, "big") + block[4:]
        hasher.update(chunk)
        yield chunk
with Peak() as upload:
    uri = store.put_chunks(chunks())
assert uri.endswith(hasher.hexdigest())
store.cache.discard(hasher.hexdigest())
with Peak() as download, store.pinned(uri) as path:
    size = path.stat().st_size
with Peak() as whole:
    body = path.read_bytes()
print(json.dumps({"upload_kib": upload.growth, "download_kib": download.growth,
                  "whole_kib": whole.growth, "size": size}))
"""


def test_100_mb_upload_and_download_in_bounded_memory(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        **s3.env(bucket),
        "DOCPIPE_BLOB_DIR": str(tmp_path / "cache"),
        "DOCPIPE_BLOB_CACHE_MAX_BYTES": str(1024**3),
        "DOCPIPE_S3_PART_BYTES": str(PART_MIB * 1024**2),
        "DOCPIPE_S3_UPLOAD_CONCURRENCY": str(PARTS_IN_FLIGHT),
    }
    probe = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    print("100 MB through S3, resident memory growth:", measured)
    assert measured["size"] == 100 * 1024 * 1024
    # The control: holding the body shows as ~100 MiB.
    assert measured["whole_kib"] > 90 * 1024, measured
    # An upload holds about part x (parts in flight + 2): 20 MiB here (measured ~23 MB, the
    # interpreter's own allocations included); the download's blocks are 1 MiB. Under 40 MiB,
    # well under half the body, shows it never sits whole in memory.
    limit_kib = 40 * 1024
    assert measured["upload_kib"] < limit_kib, measured
    assert measured["download_kib"] < limit_kib, measured


def test_a_cache_smaller_than_the_blob_still_serves_it(
    s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Downloaded, held while in use, and dropped once released (the cache holds 1 byte)."""
    writer = machine(s3, bucket, tmp_path / "a")
    uri = writer.put_bytes(b"larger than the whole cache")
    reader = machine(s3, bucket, tmp_path / "b", blob_cache_max_bytes=1)
    with reader.pinned(uri) as path:
        assert path.read_bytes() == b"larger than the whole cache"
        other = writer.put_bytes(b"another blob")
        assert reader.read_bytes(other) == b"another blob"
        assert not reader.cache.path_for(other.rsplit("/", 1)[1]).exists()  # gone once read
        assert path.exists()  # still held
    assert not path.exists()  # released: the cache fits again
    assert reader.cache.entries() == []
