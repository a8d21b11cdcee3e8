"""Turn a document URI into a local file: blob://, file:// or http(s)://.

A bus message names its own document, so each scheme is read only as far as its tenant may:
a blob only when that tenant uploaded it, a local file only below the configured roots, and an
HTTP download only from public addresses on allowed ports (services.extractor.ssrf), checked
again on every redirect, streamed into the blob store under the upload size cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx
import structlog

from services.extractor.ssrf import PinnedBackend, PinnedTransport
from shared.blobstore import BlobNotFound, Blobs, pinned_file
from shared.errors import PermanentError
from shared.settings import Settings

log = structlog.get_logger(__name__)

MAX_REDIRECTS = 5

# (tenant, blob URI) -> whether that tenant uploaded that blob (shared.jobs.blob_owner_check).
BlobOwnerCheck = Callable[[str, str], Awaitable[bool]]


@dataclass(frozen=True)
class LocalDocument:
    path: Path
    fetched_uri: str | None = None  # the blob URI when the document had to be downloaded
    blob_uri: str | None = None  # the blob the file is a copy of (to pin while it is read)


async def resolve_document(
    uri: str, settings: Settings, blobs: Blobs, *, tenant: str, owns_blob: BlobOwnerCheck
) -> LocalDocument:
    """The local file of the document `tenant` asks for, or PermanentError saying why not."""
    scheme = urlsplit(uri).scheme.lower()
    if uri.startswith("blob://"):
        if not await owns_blob(tenant, uri):
            log.warning("blob not uploaded by this tenant refused", tenant=tenant, uri=uri[:200])
            # The same sentence as a missing blob: whether another tenant has it is not told.
            raise PermanentError(blob_missing(uri))
        return LocalDocument(await asyncio.to_thread(resolve_blob, uri, blobs), blob_uri=uri)
    if scheme == "file":
        return LocalDocument(await asyncio.to_thread(resolve_file, uri, settings))
    if scheme in ("http", "https"):
        blob_uri = await fetch_http(uri, settings, blobs)
        path = await asyncio.to_thread(blobs.local_path, blob_uri)
        return LocalDocument(path, blob_uri, blob_uri)
    raise PermanentError(
        f"The document address {uri[:200]!r} is not supported; use blob://, file:// or http(s)://."
    )


@contextlib.asynccontextmanager
async def document_file(blobs: Blobs, doc: LocalDocument) -> AsyncIterator[Path]:
    """The document's local file, held in the blob cache (never evicted) while in use."""
    if doc.blob_uri is None:
        yield doc.path
        return
    async with pinned_file(blobs, doc.blob_uri, missing=blob_missing(doc.blob_uri)) as path:
        yield path


def blob_missing(uri: str) -> str:
    return f"The uploaded document {uri[:200]} is not in the blob store."


def resolve_blob(uri: str, blobs: Blobs) -> Path:
    try:
        return blobs.local_path(uri)
    except BlobNotFound as exc:
        raise PermanentError(blob_missing(uri)) from exc
    except ValueError as exc:
        raise PermanentError(
            f"The document address {uri[:200]!r} is not a valid blob URI."
        ) from exc


def resolve_file(uri: str, settings: Settings) -> Path:
    """A regular file below one of settings.file_roots, symlinks resolved, within the size cap.

    Containment is checked on the written path before the file system is touched (so nothing
    outside the roots can be probed), and again on the resolved path (no symlink escape)."""
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise PermanentError(
            f"The file address {uri[:200]!r} names another host; only local files can be read."
        )
    if not settings.file_roots:
        raise PermanentError(
            "Local files (file://) cannot be read here: no folder is configured for them "
            "(DOCPIPE_FILE_ROOTS)."
        )
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise PermanentError(f"The file address {uri[:200]!r} is not an absolute path.")
    roots = [Path(os.path.realpath(root)) for root in settings.file_roots]
    outside = PermanentError(
        f"The file {str(path)[:200]} is outside the folders documents may be read from."
    )
    if not within(Path(os.path.normpath(path)), roots):
        raise outside
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except FileNotFoundError as exc:
        raise PermanentError(f"The file {str(path)[:200]} does not exist.") from exc
    except (OSError, RuntimeError) as exc:  # a symlink loop, a permission denied
        raise PermanentError(f"The file {str(path)[:200]} cannot be read.") from exc
    if not within(real, roots):
        raise outside
    if not stat.S_ISREG(info.st_mode):
        raise PermanentError(f"The file {str(path)[:200]} is not a regular file.")
    if info.st_size > settings.max_upload_bytes:
        raise PermanentError(too_large(settings.max_upload_bytes))
    return real


def within(path: Path, roots: list[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


async def fetch_http(url: str, settings: Settings, blobs: Blobs) -> str:
    """Download into the blob store; returns the blob URI. Every connection (the first and
    each redirect's) is made by a PinnedBackend: resolved, checked, connected by address."""
    backend = PinnedBackend(
        allow_private=settings.allow_private_urls, allowed_ports=settings.fetch_allowed_ports
    )
    async with httpx.AsyncClient(
        transport=PinnedTransport(backend),
        follow_redirects=False,
        timeout=httpx.Timeout(settings.http_fetch_timeout_seconds),
        trust_env=False,
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = checked_url(url)
            async with client.stream("GET", target) as response:
                if response.is_redirect:
                    url = redirect_target(url, response)
                    continue
                return await save_response(response, blobs, settings.max_upload_bytes)
    raise PermanentError(f"The download was redirected more than {MAX_REDIRECTS} times.")


def checked_url(url: str) -> httpx.URL:
    """The URL to request; its address and port are checked when it is connected to."""
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise PermanentError(f"The address {url[:200]!r} is not a valid URL.") from exc
    if not target.host:
        raise PermanentError(f"The address {url[:200]!r} has no host name.")
    return target


def redirect_target(url: str, response: httpx.Response) -> str:
    location = response.headers.get("location")
    if not location:
        raise PermanentError(f"The server at {url[:200]} redirected nowhere.")
    target: str = urljoin(url, location)
    if urlsplit(target).scheme not in ("http", "https"):
        raise PermanentError("The download was redirected to a non-HTTP address.")
    return target


async def save_response(response: httpx.Response, blobs: Blobs, limit: int) -> str:
    if 400 <= response.status_code < 500:
        raise PermanentError(
            f"The document could not be downloaded from {response.request.url.host}: the "
            f"server answered {response.status_code} {response.reason_phrase}."
        )
    response.raise_for_status()  # 5xx: retried
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PermanentError(too_large(limit))
    return await stream_to_blob(response, blobs, limit)


def too_large(limit: int) -> str:
    size = f"{limit / (1024 * 1024):g} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return f"The document is larger than the limit of {size}."


async def stream_to_blob(response: httpx.Response, blobs: Blobs, limit: int) -> str:
    hasher = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs.staging_dir, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in response.aiter_bytes(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise PermanentError(too_large(limit))
                hasher.update(chunk)
                fh.write(chunk)
        # Moved into place atomically (readers never see a partial blob), or uploaded.
        return await asyncio.to_thread(blobs.put_staged, Path(tmp), hasher.hexdigest())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
