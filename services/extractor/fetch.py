"""Turn a document URI into a local file: blob://, file:// or http(s)://.

HTTP downloads stream into the blob store under a size cap, and refuse hosts that resolve to
loopback, private, link-local or reserved addresses (SSRF), checked again on every redirect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from shared.blobstore import BlobNotFound, BlobStore
from shared.errors import PermanentError
from shared.settings import Settings

MAX_REDIRECTS = 5


@dataclass(frozen=True)
class LocalDocument:
    path: Path
    fetched_uri: str | None = None  # the blob URI when the document had to be downloaded


async def resolve_document(uri: str, settings: Settings, blobs: BlobStore) -> LocalDocument:
    scheme = urlsplit(uri).scheme.lower()
    if uri.startswith("blob://"):
        return LocalDocument(resolve_blob(uri, blobs))
    if scheme == "file":
        return LocalDocument(resolve_file(uri))
    if scheme in ("http", "https"):
        blob_uri = await fetch_http(uri, settings, blobs)
        return LocalDocument(blobs.local_path(blob_uri), blob_uri)
    raise PermanentError(
        f"The document address {uri[:200]!r} is not supported; use blob://, file:// or http(s)://."
    )


def resolve_blob(uri: str, blobs: BlobStore) -> Path:
    try:
        return blobs.local_path(uri)
    except BlobNotFound as exc:
        raise PermanentError(f"The uploaded document {uri} is not in the blob store.") from exc
    except ValueError as exc:
        raise PermanentError(
            f"The document address {uri[:200]!r} is not a valid blob URI."
        ) from exc


def resolve_file(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise PermanentError(
            f"The file address {uri[:200]!r} names another host; only local files can be read."
        )
    path = Path(unquote(parts.path))
    if not path.is_absolute():
        raise PermanentError(f"The file address {uri[:200]!r} is not an absolute path.")
    if not path.exists():
        raise PermanentError(f"The file {path} does not exist.")
    if not path.is_file():
        raise PermanentError(f"The file {path} is not a regular file.")
    return path


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


async def check_host(url: str, settings: Settings) -> None:
    """Refuse URLs whose host resolves to a non-public address (unless explicitly allowed)."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise PermanentError(f"The address {url[:200]!r} has no host name.")
    if settings.allow_private_urls:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # DNS can hiccup; a name that truly does not exist fails again after the retries.
        raise ConnectionError(f"could not resolve {host}: {exc}") from exc
    addresses = {info[4][0] for info in infos}
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise PermanentError(
            f"The address {host} points to a private or local network; downloading from it is "
            "not allowed."
        )


async def fetch_http(url: str, settings: Settings, blobs: BlobStore) -> str:
    """Download into the blob store; returns the blob URI."""
    limit = settings.max_upload_bytes
    timeout = httpx.Timeout(settings.http_fetch_timeout_seconds)
    async with httpx.AsyncClient(
        follow_redirects=False, timeout=timeout, trust_env=False
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await check_host(url, settings)
            async with client.stream("GET", url) as response:
                if response.is_redirect:
                    location = response.headers.get("location")
                    if not location:
                        raise PermanentError(f"The server at {url[:200]} redirected nowhere.")
                    url = urljoin(url, location)
                    if urlsplit(url).scheme not in ("http", "https"):
                        raise PermanentError("The download was redirected to a non-HTTP address.")
                    continue
                if 400 <= response.status_code < 500:
                    raise PermanentError(
                        f"The document could not be downloaded: the server answered "
                        f"{response.status_code} {response.reason_phrase}."
                    )
                response.raise_for_status()  # 5xx: retried
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > limit:
                    raise PermanentError(too_large(limit))
                return await stream_to_blob(response, blobs, limit)
    raise PermanentError(f"The download was redirected more than {MAX_REDIRECTS} times.")


def too_large(limit: int) -> str:
    size = f"{limit / (1024 * 1024):g} MB" if limit >= 1024 * 1024 else f"{limit} bytes"
    return f"The document is larger than the limit of {size}."


async def stream_to_blob(response: httpx.Response, blobs: BlobStore, limit: int) -> str:
    blobs.root.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(dir=blobs.root, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in response.aiter_bytes(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise PermanentError(too_large(limit))
                hasher.update(chunk)
                fh.write(chunk)
        digest = hasher.hexdigest()
        final = blobs.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)  # atomic, as BlobStore does: readers never see a partial blob
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return blobs.uri_for(digest)
