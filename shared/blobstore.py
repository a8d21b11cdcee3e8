"""Content-addressed blob stores: blob://sha256/<hex>.

`Blobs` is what the services use; two backends implement it: `BlobStore`, a folder on this
machine (the default), and shared.blob_s3.S3BlobStore, an S3-compatible bucket that machines
share, read through a bounded local cache (DOCPIPE_BLOB_BACKEND, docs/decisions/1050). Their
methods block on disk or network: services call them in worker threads.

The folder: writes go to a temporary file in the same directory and are renamed into place, so
a reader never sees a half-written blob and concurrent writers of the same content are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shared.errors import PermanentError

if TYPE_CHECKING:
    from shared.settings import Settings

SCHEME = "blob://sha256/"


class BlobNotFound(FileNotFoundError):
    pass


def check_digest(digest: str) -> None:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")


def uri_for(digest: str) -> str:
    return SCHEME + digest


def digest_of(uri: str) -> str:
    if not uri.startswith(SCHEME):
        raise ValueError(f"not a blob URI: {uri!r}")
    return uri[len(SCHEME) :]


class Blobs(Protocol):
    """A content-addressed blob store as the services use it (every method may block)."""

    @property
    def staging_dir(self) -> Path:
        """Where a caller writes a file it will hand to put_staged (same file system)."""

    @property
    def child_dir(self) -> Path:
        """The folder of the local BlobStore a sandboxed child writes its blobs to; the parent
        then calls push for each."""

    def put_bytes(self, data: bytes) -> str: ...
    def put_chunks(self, chunks: Iterable[bytes]) -> str: ...
    def put_file(self, path: Path | str) -> str: ...
    def put_staged(self, tmp: Path, digest: str) -> str:
        """Store a complete file of staging_dir whose sha256 is `digest` (it is moved)."""

    def push(self, uri: str) -> None:
        """Make a blob a child wrote into child_dir readable by every reader of the store."""

    def pinned(self, uri: str) -> contextlib.AbstractContextManager[Path]:
        """The blob as a local file that stays there until the block ends; BlobNotFound."""

    def local_path(self, uri: str) -> Path: ...
    def read_bytes(self, uri: str) -> bytes: ...
    def exists(self, uri: str) -> bool: ...
    def delete(self, uri: str, *, min_age_seconds: float = 0.0) -> bool: ...


@contextlib.asynccontextmanager
async def pinned_file(blobs: Blobs, uri: str, *, missing: str) -> AsyncIterator[Path]:
    """blobs.pinned for async code: the download (if any) runs in a worker thread; the file
    stays on this machine until the block ends (a child reads it meanwhile). A blob that is
    not there, or a URI that names none, is a PermanentError saying `missing`."""
    pin = blobs.pinned(uri)
    try:
        path = await asyncio.to_thread(pin.__enter__)
    except (BlobNotFound, ValueError) as exc:
        raise PermanentError(missing) from exc
    try:
        yield path
    finally:
        pin.__exit__(None, None, None)  # closes the lock's descriptor: never blocks


def open_blob_store(settings: Settings) -> Blobs:
    """The backend the settings choose (DOCPIPE_BLOB_BACKEND)."""
    if settings.blob_backend == "s3":
        from shared.blob_s3 import S3BlobStore  # obstore is loaded only where it is used

        return S3BlobStore(settings)
    return BlobStore(settings.blob_dir)


class BlobStore:
    """The folder backend (and the layout of the S3 backend's cache and the children's
    output): <root>/ab/cd/<sha256>."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def path_for(self, digest: str) -> Path:
        check_digest(digest)
        return self.root / digest[:2] / digest[2:4] / digest

    uri_for = staticmethod(uri_for)
    digest_of = staticmethod(digest_of)

    @property
    def staging_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.root

    @property
    def child_dir(self) -> Path:
        return self.root

    def put_staged(self, tmp: Path, digest: str) -> str:
        final = self.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)  # atomic: readers never see a partial blob
        self._keep_owner(final)
        return self.uri_for(digest)

    def _keep_owner(self, final: Path) -> None:
        """What root writes into a store another user owns goes to that user. Root writes
        here when the extractor or OCR runs as root to start its children as the sandbox user
        (DOCPIPE_SANDBOX_USER); the other services, as the store's user, must still be able
        to write beside it. A store root owned by root but given to a group (a volume with
        Kubernetes' fsGroup) gets the group: its folders group-writable, the blob readable."""
        if os.geteuid() != 0:
            return
        owner = self.root.stat()
        folders = (final.parent.parent, final.parent)
        if owner.st_uid != 0:
            for path in (*folders, final):
                os.chown(path, owner.st_uid, owner.st_gid)
        elif owner.st_gid != 0:
            for path, mode in ((folders[0], 0o2775), (folders[1], 0o2775), (final, 0o640)):
                os.chown(path, -1, owner.st_gid)
                os.chmod(path, mode)

    def push(self, uri: str) -> None:
        """The children write into this very folder: nothing to do."""

    @contextlib.contextmanager
    def pinned(self, uri: str) -> Iterator[Path]:
        """Nothing evicts a blob here (only the purge deletes, of blobs nothing references)."""
        yield self.local_path(uri)

    def put_bytes(self, data: bytes) -> str:
        return self.put_chunks([data])

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        """Store the concatenated chunks; returns the blob URI."""
        self.root.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
            digest = hasher.hexdigest()
            final = self.path_for(digest)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            self._keep_owner(final)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return self.uri_for(digest)

    def put_file(self, path: Path | str) -> str:
        def read() -> Iterable[bytes]:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block

        return self.put_chunks(read())

    def local_path(self, uri: str) -> Path:
        path = self.path_for(self.digest_of(uri))
        if not path.exists():
            raise BlobNotFound(uri)
        return path

    def read_bytes(self, uri: str) -> bytes:
        return self.local_path(uri).read_bytes()

    def exists(self, uri: str) -> bool:
        try:
            return self.path_for(self.digest_of(uri)).exists()
        except ValueError:
            return False

    def delete(self, uri: str, *, min_age_seconds: float = 0.0) -> bool:
        """Remove the blob's file; True when it was removed. A file written less than
        `min_age_seconds` ago is left (its writer may not have recorded it yet): every write
        renames a fresh file into place, so its mtime is the last write's time."""
        path = self.path_for(self.digest_of(uri))
        try:
            if min_age_seconds > 0 and time.time() - path.stat().st_mtime < min_age_seconds:
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
