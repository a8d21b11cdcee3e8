"""This machine's bounded cache of a remote blob store: the local files that sandboxed children
read, laid out as a local BlobStore (<root>/ab/cd/<sha256>).

Least recently used files go first once the cache passes its size. A file in use is never
evicted: whoever uses one holds a shared flock(2) on it (`pinned`), and eviction takes the file
only under a non-blocking exclusive lock. The lock is the kernel's, so it holds across the
processes (services, children) that share one cache folder, and dies with its holder: a crashed
process leaves no stale pin behind. Use time is the file's mtime, set on every use (atime is
unreliable: noatime and relatime mounts).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class CachedFile:
    path: Path
    size: int
    used_at: float


class BlobCache:
    def __init__(self, root: Path | str, max_bytes: int) -> None:
        self.root = Path(root).resolve()
        self.max_bytes = max_bytes

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:4] / digest

    @contextlib.contextmanager
    def pinned(self, digest: str) -> Iterator[Path | None]:
        """The cached file, held out of eviction until the block ends; None when not cached."""
        path = self.path_for(digest)
        while True:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                yield None
                return
            fcntl.flock(fd, fcntl.LOCK_SH)
            # Evicted between open and lock: the name is gone (or names another file).
            if _same_file(fd, path):
                break
            os.close(fd)
        try:
            with contextlib.suppress(OSError):
                os.utime(path)  # used now: last in the eviction order
            yield path
        finally:
            os.close(fd)  # releases the lock

    def admit(self, tmp: Path, digest: str, *, evict: bool = True) -> Path:
        """Move a complete file (in this cache's folder) to its place, then evict down to size
        (`evict=False`: the caller pins it first, then evicts; else a cache smaller than the
        file would drop it at once). The first copy wins: a file already there may be pinned,
        and its bytes are the same."""
        final = self.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(tmp, final)
        except FileExistsError:
            pass
        except FileNotFoundError:
            if not final.exists():
                raise  # (else a concurrent writer of the same bytes moved it in first)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if evict:
            self.evict()
        return final

    def entries(self) -> list[CachedFile]:
        """The cached files (temporary and staging files, named with a dot, are not)."""
        found: list[CachedFile] = []
        for first in _subdirs(self.root):
            for second in _subdirs(first):
                with os.scandir(second) as it:
                    for entry in it:
                        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                            continue
                        info = entry.stat(follow_symlinks=False)
                        found.append(CachedFile(Path(entry.path), info.st_size, info.st_mtime))
        return found

    def evict(self) -> int:
        """Remove the least recently used files not in use until the cache fits; returns the
        bytes freed. A scan of the folder each time: the cache is bounded, so is the scan, and
        the folder (not a count in one process) is the truth for every process sharing it."""
        entries = self.entries()
        total = sum(e.size for e in entries)
        freed = 0
        for entry in sorted(entries, key=lambda e: e.used_at):
            if total - freed <= self.max_bytes:
                break
            if _remove_unused(entry.path):
                freed += entry.size
        if total - freed > self.max_bytes:
            log.info("blob cache over its size: the rest is in use", bytes=total - freed)
        return freed

    def discard(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(digest))


def _subdirs(path: Path) -> list[Path]:
    try:
        with os.scandir(path) as it:
            return [
                Path(e.path)
                for e in it
                if len(e.name) == 2 and not e.name.startswith(".") and e.is_dir()
            ]
    except FileNotFoundError:
        return []


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _remove_unused(path: Path) -> bool:
    """Unlink the file unless someone holds it pinned (their shared lock refuses ours)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        if not _same_file(fd, path):
            return False
        os.unlink(path)
        return True
    finally:
        os.close(fd)
