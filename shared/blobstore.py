"""Content-addressed blob store on the filesystem: blob://sha256/<hex>.

Writes go to a temporary file in the same directory and are renamed into place, so a reader
never sees a half-written blob and concurrent writers of the same content are harmless.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

SCHEME = "blob://sha256/"


class BlobNotFound(FileNotFoundError):
    pass


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    def path_for(self, digest: str) -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return self.root / digest[:2] / digest[2:4] / digest

    @staticmethod
    def uri_for(digest: str) -> str:
        return SCHEME + digest

    @staticmethod
    def digest_of(uri: str) -> str:
        if not uri.startswith(SCHEME):
            raise ValueError(f"not a blob URI: {uri!r}")
        return uri[len(SCHEME) :]

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
