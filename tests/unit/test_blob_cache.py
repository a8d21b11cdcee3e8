"""The S3 backend's local cache: bounded, least recently used first, and a file in use (pinned,
by this process or another) is never evicted."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from shared.blob_cache import BlobCache

ROOT = Path(__file__).resolve().parents[2]


def cached(cache: BlobCache, data: bytes, used_at: float | None = None) -> str:
    """Admit `data` as a cached blob; `used_at` sets its last use."""
    digest = hashlib.sha256(data).hexdigest()
    cache.root.mkdir(parents=True, exist_ok=True)
    tmp = cache.root / f".incoming-{digest[:8]}"
    tmp.write_bytes(data)
    path = cache.admit(tmp, digest)
    if used_at is not None:
        os.utime(path, (used_at, used_at))
    assert not tmp.exists()
    return digest


def present(cache: BlobCache, *digests: str) -> list[bool]:
    return [cache.path_for(d).exists() for d in digests]


def test_least_recently_used_goes_first(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=10 * 1024 * 1024)  # no eviction while filling
    now = time.time()
    old, middle, new = (cached(cache, bytes([n]) * 1000, used_at=now - 300 + n) for n in range(3))
    with cache.pinned(old):
        pass  # a read: `old` becomes the most recently used
    cache.max_bytes = 2000
    assert cache.evict() == 1000
    assert present(cache, old, middle, new) == [True, False, True]
    assert sum(e.size for e in cache.entries()) == 2000


def test_a_pinned_file_is_never_evicted(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=10 * 1024 * 1024)
    digest = cached(cache, b"x" * 5000, used_at=time.time() - 3600)
    cache.max_bytes = 100
    with cache.pinned(digest) as path:
        assert path is not None
        assert cache.evict() == 0
        other = cached(cache, b"y" * 200)  # admitting evicts what it can: the unpinned one
        assert present(cache, digest, other) == [True, False]
    assert cache.evict() == 5000  # released: now it goes
    assert present(cache, digest) == [False]


def test_a_pin_held_by_another_process_is_respected(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=10 * 1024 * 1024)
    digest = cached(cache, b"z" * 4000)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from shared.blob_cache import BlobCache\n"
            "with BlobCache(sys.argv[1], 1).pinned(sys.argv[2]) as p:\n"
            "    print(p, flush=True); sys.stdin.read()",
            str(tmp_path),
            digest,
        ],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == str(cache.path_for(digest))
        cache.max_bytes = 1
        assert cache.evict() == 0
        assert present(cache, digest) == [True]
    finally:
        holder.stdin.close()  # type: ignore[union-attr]
        holder.wait(10)
    assert cache.evict() == 4000  # its holder is gone, and so is its lock


def test_an_evicted_file_is_not_handed_out(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1)
    digest = hashlib.sha256(b"gone").hexdigest()
    with cache.pinned(digest) as path:
        assert path is None  # never cached
    cached(cache, b"gone")  # admitted, then evicted at once: the cache holds 1 byte
    with cache.pinned(digest) as path:
        assert path is None


def test_temporary_files_are_not_counted_or_evicted(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=1)
    partial = tmp_path / ".download-abc"
    partial.write_bytes(b"p" * 100)
    outgoing = tmp_path / ".outgoing" / "ab" / "cd"
    outgoing.mkdir(parents=True)
    (outgoing / ("ab" * 32)).write_bytes(b"o" * 100)
    assert cache.entries() == []
    assert cache.evict() == 0
    assert partial.exists()


def test_the_first_copy_stays_when_the_same_bytes_arrive_again(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=10_000)
    digest = cached(cache, b"same")
    first = os.stat(cache.path_for(digest)).st_ino
    with cache.pinned(digest):
        cached(cache, b"same")
        assert os.stat(cache.path_for(digest)).st_ino == first  # the pinned file, not replaced
