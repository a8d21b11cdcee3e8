"""Blobs in an S3-compatible bucket that every machine shares, through this machine's bounded
local cache (shared.blob_cache): blob://sha256/<hex> is the object `sha256/<hex>`.

Writes stage a local file first: the key is the content's hash, known only once the last byte
is in, and S3 has no rename (a server-side copy rewrites the whole object, once more, and stops
at 5 GB). The staged file is hashed as it is written, uploaded in parts (multipart: memory
holds s3_part_bytes x s3_upload_concurrency, whatever the size), and then becomes this
machine's cached copy, so the sniffing and extraction that follow read it without a download.
(docs/decisions/1050-shared-blob-store.md)

The methods block (disk and network): callers run them in worker threads, as they run the
local folder's. obstore's calls are made from those threads; they release the GIL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import S3Store

from shared.blob_cache import BlobCache
from shared.blobstore import BlobNotFound, BlobStore, check_digest, digest_of, uri_for
from shared.settings import Settings

if TYPE_CHECKING:
    from obstore.store import ObjectStore

KEY_PREFIX = "sha256/"
# The folder below the cache where sandboxed children write the blobs they make (page images)
# until the parent uploads them: not part of the cache, so never evicted before the upload.
OUTGOING = ".outgoing"
DOWNLOAD_BLOCK = 1 << 20
# What obstore raises for a missing object (its own error, or the builtin it maps 404 to).
MISSING = (NotFoundError, FileNotFoundError)


class BlobCorrupted(RuntimeError):
    pass


def s3_store(settings: Settings) -> S3Store:
    """The bucket's client; credentials left empty come from the environment (AWS_*)."""
    config: dict[str, str] = {"region": settings.s3_region}
    if settings.s3_endpoint:
        config["endpoint"] = settings.s3_endpoint
    if settings.s3_access_key_id:
        config["access_key_id"] = settings.s3_access_key_id
        config["secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    allow_http = settings.s3_endpoint.startswith("http://")
    return S3Store(
        settings.s3_bucket,
        config=config,  # type: ignore[arg-type]  # S3Config is a TypedDict of these keys
        client_options={"allow_http": allow_http},
    )


class S3BlobStore:
    def __init__(self, settings: Settings, store: ObjectStore | None = None) -> None:
        self.cache = BlobCache(settings.blob_dir, settings.blob_cache_max_bytes)
        self.store: ObjectStore = store if store is not None else s3_store(settings)
        self.part_bytes = settings.s3_part_bytes
        self.upload_concurrency = settings.s3_upload_concurrency

    @property
    def root(self) -> Path:
        return self.cache.root

    @property
    def staging_dir(self) -> Path:
        self.cache.root.mkdir(parents=True, exist_ok=True)
        return self.cache.root

    @property
    def child_dir(self) -> Path:
        return self.cache.root / OUTGOING

    # Writing

    def put_bytes(self, data: bytes) -> str:
        return self.put_chunks([data])

    def put_file(self, path: Path | str) -> str:
        def read() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                while block := fh.read(DOWNLOAD_BLOCK):
                    yield block

        return self.put_chunks(read())

    def put_chunks(self, chunks: Iterable[bytes]) -> str:
        hasher = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.staging_dir, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
        except BaseException:
            _unlink(Path(tmp))
            raise
        return self.put_staged(Path(tmp), hasher.hexdigest())

    def put_staged(self, tmp: Path, digest: str) -> str:
        """Upload a complete file (in staging_dir) whose sha256 is `digest`; it becomes the
        cached copy. Always uploaded, even when the object exists: the write renews its
        LastModified, which the purge's minimum age reads (as the folder's rename renews
        mtime)."""
        check_digest(digest)
        try:
            self._upload(tmp, digest)
            self.cache.admit(tmp, digest)
        finally:
            _unlink(tmp)
        return uri_for(digest)

    def push(self, uri: str) -> None:
        """Upload a blob a child wrote into child_dir; it moves into the cache."""
        digest = digest_of(uri)
        outgoing = BlobStore(self.child_dir).path_for(digest)
        try:
            self._upload(outgoing, digest)
        except FileNotFoundError:
            if self.cache.path_for(digest).exists():
                return  # a concurrent push of the same bytes took it
            raise BlobNotFound(uri) from None
        self.cache.admit(outgoing, digest)

    def _upload(self, path: Path, digest: str) -> None:
        with open(path, "rb") as fh:
            obstore.put(
                self.store,
                KEY_PREFIX + digest,
                fh,
                chunk_size=self.part_bytes,
                max_concurrency=self.upload_concurrency,
            )

    # Reading

    @contextlib.contextmanager
    def pinned(self, uri: str) -> Iterator[Path]:
        """The blob's local file, downloaded when not cached, never evicted while held."""
        digest = digest_of(uri)
        check_digest(digest)
        downloaded = held = False
        try:
            for _ in range(3):  # evicted by another process between download and pin: retried
                with self.cache.pinned(digest) as path:
                    if path is not None:
                        held = True
                        if downloaded:
                            self.cache.evict()  # room for it, made once it is held
                        yield path
                        return
                self._download(digest, uri)
                downloaded = True
            raise BlobNotFound(uri)
        finally:
            if held and downloaded:
                self.cache.evict()  # released (over size while it was held): fit again

    def local_path(self, uri: str) -> Path:
        """The cached file, downloaded when not there; not held (see pinned)."""
        with self.pinned(uri) as path:
            return path

    def read_bytes(self, uri: str) -> bytes:
        with self.pinned(uri) as path:
            return path.read_bytes()

    def _download(self, digest: str, uri: str) -> None:
        """Stream the object into the cache, checking its hash on the way."""
        try:
            result = obstore.get(self.store, KEY_PREFIX + digest)
        except MISSING:
            raise BlobNotFound(uri) from None
        hasher = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(dir=self.staging_dir, prefix=".download-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in result.stream(min_chunk_size=DOWNLOAD_BLOCK):
                    hasher.update(chunk)
                    fh.write(chunk)
            if hasher.hexdigest() != digest:
                raise BlobCorrupted(f"the stored object of {uri} does not match its hash")
            self.cache.admit(Path(tmp), digest, evict=False)  # the caller pins, then evicts
        finally:
            _unlink(Path(tmp))

    def exists(self, uri: str) -> bool:
        try:
            digest = digest_of(uri)
            check_digest(digest)
            obstore.head(self.store, KEY_PREFIX + digest)
        except (ValueError, *MISSING):
            return False
        return True

    def delete(self, uri: str, *, min_age_seconds: float = 0.0) -> bool:
        """Remove the object (and this machine's copy); True when it was removed. An object
        written less than `min_age_seconds` ago is left (its writer may not have recorded it)."""
        digest = digest_of(uri)
        check_digest(digest)
        key = KEY_PREFIX + digest
        try:
            meta = obstore.head(self.store, key)
        except MISSING:
            self.cache.discard(digest)
            return False
        age = (datetime.now(UTC) - meta["last_modified"]).total_seconds()
        if min_age_seconds > 0 and age < min_age_seconds:
            return False
        obstore.delete(self.store, key)
        self.cache.discard(digest)
        return True


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
