"""Resolving document URIs: blob://, file:// and http(s):// with its size cap and SSRF guard.
(The address filter, the pinned connection and the file roots: test_security_fetch.py.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.extractor.fetch import LocalDocument
from services.extractor.fetch import resolve_document as resolve_as_tenant
from services.extractor.ssrf import is_public_address
from shared.blobstore import BlobStore
from shared.errors import PermanentError
from shared.settings import Settings

BODY = b"%PDF-1.4 pretend document body " * 100


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/doc.pdf":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/chunked":
            self.send_response(200)  # no Content-Length: the cap must hold while streaming
            self.end_headers()
            self.wfile.write(BODY * 10)
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/doc.pdf")
            self.end_headers()
        elif self.path == "/boom":
            self.send_response(503)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    kw.setdefault("file_roots", [tmp_path])
    return Settings(blob_dir=tmp_path / "blobs", http_fetch_timeout_seconds=5, **kw)


async def owns_every_blob(tenant: str, uri: str) -> bool:
    return True


async def resolve_document(uri: str, settings: Settings, blobs: BlobStore) -> LocalDocument:
    """As the tenant who uploaded every blob (ownership itself: test_security_fetch.py)."""
    return await resolve_as_tenant(uri, settings, blobs, tenant="t", owns_blob=owns_every_blob)


async def test_blob_and_file_uris(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    blobs = BlobStore(settings.blob_dir)
    uri = blobs.put_bytes(b"hello")
    assert (await resolve_document(uri, settings, blobs)).path.read_bytes() == b"hello"
    with pytest.raises(PermanentError, match="not in the blob store"):
        await resolve_document("blob://sha256/" + "0" * 64, settings, blobs)
    doc = tmp_path / "a doc.txt"
    doc.write_text("x")
    local = await resolve_document("file://" + str(doc).replace(" ", "%20"), settings, blobs)
    assert local.path == doc and local.fetched_uri is None
    with pytest.raises(PermanentError, match="does not exist"):
        await resolve_document(f"file://{tmp_path}/missing.pdf", settings, blobs)
    with pytest.raises(PermanentError, match="not a regular file"):
        await resolve_document(f"file://{tmp_path}", settings, blobs)
    with pytest.raises(PermanentError, match="not supported"):
        await resolve_document("ftp://example.com/x.pdf", settings, blobs)


async def test_private_hosts_are_refused(tmp_path: Path, server: str) -> None:
    settings = settings_for(tmp_path)
    blobs = BlobStore(settings.blob_dir)
    for url in (f"{server}/doc.pdf", "http://localhost:1/x", "http://169.254.169.254/latest"):
        with pytest.raises(PermanentError, match="private or local network"):
            await resolve_document(url, settings, blobs)


def test_public_address_classification() -> None:
    assert is_public_address("93.184.216.34")
    assert is_public_address("2606:2800:220:1:248:1893:25c8:1946")
    for addr in (
        "127.0.0.1",
        "10.1.2.3",
        "192.168.0.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "240.0.0.1",
        "fc00::1",
    ):
        assert not is_public_address(addr), addr


async def test_http_download_into_blob_store(tmp_path: Path, server: str) -> None:
    settings = settings_for(tmp_path, allow_private_urls=True)
    blobs = BlobStore(settings.blob_dir)
    doc = await resolve_document(f"{server}/moved", settings, blobs)
    assert doc.fetched_uri is not None and doc.fetched_uri.startswith("blob://sha256/")
    assert doc.path.read_bytes() == BODY


async def test_http_errors(tmp_path: Path, server: str) -> None:
    settings = settings_for(tmp_path, allow_private_urls=True, max_upload_bytes=len(BODY) * 2)
    blobs = BlobStore(settings.blob_dir)
    with pytest.raises(PermanentError, match="downloaded from 127.0.0.1: the server answered 404"):
        await resolve_document(f"{server}/nothing", settings, blobs)
    with pytest.raises(PermanentError, match="larger than the limit"):
        await resolve_document(f"{server}/chunked", settings, blobs)
    # 5xx and network failures are not permanent: the bus retries them.
    with pytest.raises(httpx.HTTPStatusError):
        await resolve_document(f"{server}/boom", settings, blobs)
    with pytest.raises(httpx.ConnectError):
        await resolve_document("http://127.0.0.1:1/x", settings, blobs)
    assert not list(Path(settings.blob_dir).glob(".download-*"))  # no partial files left


async def test_http_declared_size_over_limit(tmp_path: Path, server: str) -> None:
    settings = settings_for(tmp_path, allow_private_urls=True, max_upload_bytes=100)
    with pytest.raises(PermanentError, match="larger than the limit"):
        await resolve_document(f"{server}/doc.pdf", settings, BlobStore(settings.blob_dir))
