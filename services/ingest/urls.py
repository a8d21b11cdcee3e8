"""Checking a document URL at submit time: what the extractor could never fetch is refused
with a sentence before a job exists. The address itself (private ranges, DNS rebinding) is
judged by the extractor when it connects (services/extractor/ssrf.py)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from services.ingest.filenames import sanitize_filename
from shared.bounds import URI_MAX

URL_SCHEMES = ("http", "https")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def url_problem(url: str, allowed_ports: list[int], allow_any_port: bool = False) -> str | None:
    """Why `url` cannot be a document address, as a sentence; None when it can."""
    if len(url) > URI_MAX:
        return f"The URL is {len(url)} characters long; at most {URI_MAX} are allowed."
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"The URL {url[:200]!r} is not valid (its port or host cannot be read)."
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        named = f"{scheme!r}" if scheme else "no scheme"
        return f"The URL {url[:200]!r} has {named}; only http and https can be downloaded."
    if not parts.hostname:
        return f"The URL {url[:200]!r} has no host name."
    if parts.username or parts.password:
        return f"The URL {url[:200]!r} carries credentials; they are not allowed in a URL."
    effective = port if port is not None else _DEFAULT_PORTS[scheme]
    if not allow_any_port and effective not in allowed_ports:
        ports = ", ".join(str(p) for p in allowed_ports)
        return f"The URL {url[:200]!r} uses port {effective}; allowed ports are {ports}."
    return None


def filename_of_url(url: str) -> str | None:
    """The last path segment, as a display name (None when the path names no file)."""
    segment = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return sanitize_filename(segment) or None
