"""What a bus message can make the extractor read: local files only below the roots, blobs only
of their own tenant, and downloads only from public addresses on allowed ports, connected to
the address that was checked."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.extractor import ssrf
from services.extractor.fetch import resolve_document
from services.extractor.ssrf import PinnedBackend, is_public_address
from shared.blobstore import BlobStore
from shared.errors import PermanentError
from shared.settings import Settings

BODY = b"%PDF-1.4 a pinned document " * 10


class Handler(BaseHTTPRequestHandler):
    hosts: list[str] = []

    def do_GET(self) -> None:
        Handler.hosts.append(self.headers.get("Host", ""))
        if self.path == "/doc.pdf":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server_port() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()


async def owns_nothing(tenant: str, uri: str) -> bool:
    return False


async def owns_all(tenant: str, uri: str) -> bool:
    return True


async def resolve(uri: str, settings: Settings, *, owner: bool = True) -> Path:
    blobs = BlobStore(settings.blob_dir)
    check = owns_all if owner else owns_nothing
    doc = await resolve_document(uri, settings, blobs, tenant="acme", owns_blob=check)
    return doc.path


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(blob_dir=tmp_path / "blobs", http_fetch_timeout_seconds=5, **kw)


# --- the address filter -------------------------------------------------------------------

REFUSED = [
    "100.64.0.1",  # carrier-grade NAT
    "100.127.255.254",
    "192.88.99.1",  # 6to4 relay anycast
    "192.0.0.9",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "192.31.196.1",
    "192.52.193.1",
    "192.175.48.1",
    "224.0.0.1",
    "255.255.255.255",
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.0.1",
    "169.254.169.254",
    "0.0.0.0",
    "240.0.0.1",
    "::",
    "::1",
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
    "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 wrapping the metadata address
    "2002:6440:1::",  # 6to4 wrapping 100.64.0.1
    "64:ff9b::7f00:1",  # NAT64 wrapping 127.0.0.1
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",  # local-use NAT64
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001:2::1",  # benchmarking
    "2001:db8::1",
    "3fff::1",
    "5f00::1",
    "100::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "fec0::1",
    "ff02::1",
    "4000::1",  # outside global unicast
]
PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "100.128.0.1",  # just past carrier-grade NAT
    "2606:2800:220:1:248:1893:25c8:1946",
    "::ffff:8.8.8.8",
    "2002:808:808::1",  # 6to4 wrapping a public address
    "64:ff9b::808:808",  # NAT64 (DNS64 networks) wrapping a public address
]


@pytest.mark.parametrize("address", REFUSED)
def test_special_purpose_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


async def test_a_name_with_one_private_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    async def answers(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    monkeypatch.setattr(ssrf, "resolve", answers)
    with pytest.raises(PermanentError, match="private or local network"):
        await ssrf.checked_addresses("mixed.test", 80, allow_private=False)


async def test_ports_outside_the_allowed_list_are_refused(tmp_path: Path) -> None:
    """An address literal is not looked up, and the port is refused before any connection."""
    settings = settings_for(tmp_path)
    assert settings.fetch_allowed_ports == [80, 443]
    with pytest.raises(PermanentError, match=r"93\.184\.216\.34:8080 uses a port .*80, 443"):
        await resolve("http://93.184.216.34:8080/x.pdf", settings)
    with pytest.raises(PermanentError, match="port"):
        await resolve("https://93.184.216.34:22/x.pdf", settings_for(tmp_path))


# --- the connection goes to the address that was checked ------------------------------------


async def test_each_checked_address_is_tried_in_turn(
    tmp_path: Path, server_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable first answer (nothing listens on [::1] at the server's port) does not
    fail the download while another checked answer connects."""

    async def answers(host: str, port: int) -> list[str]:
        return ["::1", "127.0.0.1"] if host == "dual.test" else [host]

    monkeypatch.setattr(ssrf, "resolve", answers)
    settings = settings_for(tmp_path, allow_private_urls=True)
    path = await resolve(f"http://dual.test:{server_port}/doc.pdf", settings)
    assert path.read_bytes() == BODY


async def test_connection_is_pinned_to_the_checked_address(
    tmp_path: Path, server_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host name is resolved once, by the backend, and the socket goes to that address:
    `pinned.test` exists only in this resolver, so reaching the server proves it, and the
    server still sees the host name in Host."""
    lookups: list[str] = []

    async def answers(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    monkeypatch.setattr(ssrf, "resolve", answers)
    connected: list[tuple[str, str, int]] = []
    real_connect = PinnedBackend.connect_tcp

    async def spy(self: PinnedBackend, host: str, port: int, *a: object, **kw: object) -> object:
        stream = await real_connect(self, host, port, *a, **kw)  # type: ignore[arg-type]
        connected.extend(self.connected)
        return stream

    monkeypatch.setattr(PinnedBackend, "connect_tcp", spy)
    Handler.hosts.clear()
    settings = settings_for(tmp_path, allow_private_urls=True)
    path = await resolve(f"http://pinned.test:{server_port}/doc.pdf", settings)
    assert path.read_bytes() == BODY
    assert lookups == ["pinned.test"]
    assert connected == [("pinned.test", "127.0.0.1", server_port)]
    assert Handler.hosts == [f"pinned.test:{server_port}"]


async def test_a_redirect_is_checked_again(
    tmp_path: Path, server_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first hop is allowed (its name, here, counts as public); the redirect to the
    metadata address is refused when it is connected to."""

    async def answers(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host == "public.test" else [host]

    monkeypatch.setattr(ssrf, "resolve", answers)
    monkeypatch.setattr(ssrf, "is_public_address", lambda a: a == "127.0.0.1")
    Handler.hosts.clear()
    settings = settings_for(tmp_path, fetch_allowed_ports=[80, server_port])
    with pytest.raises(PermanentError, match="169.254.169.254 points to a private"):
        await resolve(f"http://public.test:{server_port}/to-metadata", settings)
    assert Handler.hosts == [f"public.test:{server_port}"]


# --- local files ----------------------------------------------------------------------------


async def test_file_uris_are_refused_without_roots(tmp_path: Path) -> None:
    doc = tmp_path / "doc.txt"
    doc.write_text("x")
    settings = settings_for(tmp_path)
    assert settings.file_roots == []
    with pytest.raises(PermanentError, match="no folder is configured"):
        await resolve(doc.as_uri(), settings)
    with pytest.raises(PermanentError, match="no folder is configured"):
        await resolve("file:///etc/passwd", settings)


def test_file_roots_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCPIPE_FILE_ROOTS", "/srv/inbox, /data/drop")
    monkeypatch.setenv("DOCPIPE_FETCH_ALLOWED_PORTS", "443,8443")
    settings = Settings()
    assert settings.file_roots == [Path("/srv/inbox"), Path("/data/drop")]
    assert settings.fetch_allowed_ports == [443, 8443]


async def test_files_outside_the_roots_are_refused_without_probing(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    settings = settings_for(tmp_path, file_roots=[root])
    inside = root / "ok.txt"
    inside.write_text("fine")
    assert await resolve(inside.as_uri(), settings) == inside.resolve()
    for uri in (
        "file:///etc/passwd",
        "file:///etc/shadow",
        f"file://{root}/../secret.txt",  # a dot-dot out of the root
        f"file://{tmp_path}/inbox-other/x.txt",  # a sibling that shares the prefix
        "file:///nonexistent/whatever",  # no "does not exist": nothing outside is probed
    ):
        with pytest.raises(PermanentError, match="outside the folders"):
            await resolve(uri, settings)


async def test_symlinks_cannot_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    root.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    (root / "link.txt").symlink_to(secret)
    (root / "etc").symlink_to("/etc")
    (root / "inner.txt").write_text("allowed")
    (root / "inner-link.txt").symlink_to(root / "inner.txt")
    settings = settings_for(tmp_path, file_roots=[root])
    for name in ("link.txt", "etc/passwd"):
        with pytest.raises(PermanentError, match="outside the folders"):
            await resolve((root / name).as_uri(), settings)
    assert await resolve((root / "inner-link.txt").as_uri(), settings) == root / "inner.txt"


async def test_only_regular_files_within_the_size_limit(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, file_roots=[tmp_path], max_upload_bytes=10)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(PermanentError, match="not a regular file"):
        await resolve(fifo.as_uri(), settings)
    with pytest.raises(PermanentError, match="not a regular file"):
        await resolve(tmp_path.as_uri(), settings)
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 11)
    with pytest.raises(PermanentError, match="larger than the limit of 10 bytes"):
        await resolve(big.as_uri(), settings)
    with pytest.raises(PermanentError, match="does not exist"):
        await resolve((tmp_path / "missing.txt").as_uri(), settings)


# --- blobs ----------------------------------------------------------------------------------


async def test_a_blob_of_another_tenant_reads_as_missing(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    uri = BlobStore(settings.blob_dir).put_bytes(b"another tenant's upload")
    assert (await resolve(uri, settings)).read_bytes() == b"another tenant's upload"
    with pytest.raises(PermanentError, match="is not in the blob store"):
        await resolve(uri, settings, owner=False)


# --- TLS over the pinned connection: SNI and certificate checks use the host name ------------


def certificate_files(tmp_path: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for `host` (it is its own CA) and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{host}.pem", tmp_path / f"{host}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for pinned.test; records each SNI."""
    import ssl

    cert, key = certificate_files(tmp_path, "pinned.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    names: list[str] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(str(name))

    context.sni_callback = record_sni
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1]), cert, names
    httpd.shutdown()


async def test_tls_to_the_pinned_address_checks_the_host_name(
    tls_server: tuple[int, Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    import httpx

    from services.extractor.ssrf import PinnedTransport

    port, cert, names = tls_server

    async def answers(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    monkeypatch.setattr(ssrf, "resolve", answers)
    trusted = ssl.create_default_context(cafile=str(cert))
    backend = PinnedBackend(allow_private=True, allowed_ports=[])
    async with httpx.AsyncClient(transport=PinnedTransport(backend, trusted)) as client:
        response = await client.get(f"https://pinned.test:{port}/doc.pdf")
        assert response.content == BODY
        # The same address under another name: the certificate does not match it.
        with pytest.raises(httpx.ConnectError, match="certificate"):
            await client.get(f"https://other.test:{port}/doc.pdf")
    assert names[0] == "pinned.test"
    assert [(h, a) for h, a, _ in backend.connected] == [
        ("pinned.test", "127.0.0.1"),
        ("other.test", "127.0.0.1"),
    ]
