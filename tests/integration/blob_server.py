"""A real S3-compatible HTTP server for the blob tests: moto's standalone server, as its own
process on a free port (its memory, which holds the objects, is not the tests'). Without moto
the tests skip, and under CI=true they fail (tests.conftest.unavailable)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.stack import free_port
from shared.settings import Settings
from tests.conftest import unavailable

# moto's server accepts any credentials; the client still signs its requests with some.
ACCESS_KEY = "docpipe-test"
SECRET_KEY = "docpipe-test-secret"


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    def new_bucket(self) -> str:
        """A fresh bucket (path-style PUT, as S3's CreateBucket)."""
        name = f"docpipe-{uuid.uuid4().hex[:12]}"
        httpx.put(f"{self.endpoint}/{name}", timeout=10).raise_for_status()
        return name

    def keys(self, bucket: str) -> list[str]:
        """The bucket's object keys (ListObjectsV2, first page: the tests store few)."""
        response = httpx.get(f"{self.endpoint}/{bucket}?list-type=2", timeout=10)
        response.raise_for_status()
        text = response.text
        return [part.split("</Key>", 1)[0] for part in text.split("<Key>")[1:]]

    def settings(self, bucket: str, cache: Path, **kw: Any) -> Settings:
        return Settings(blob_dir=cache, **self.settings_env(bucket), **kw)

    def settings_env(self, bucket: str) -> dict[str, Any]:
        return {
            "blob_backend": "s3",
            "s3_endpoint": self.endpoint,
            "s3_bucket": bucket,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
        }

    def env(self, bucket: str) -> dict[str, str]:
        """The same, as a stack's DOCPIPE_* environment."""
        return {f"DOCPIPE_{k.upper()}": str(v) for k, v in self.settings_env(bucket).items()}


@contextmanager
def moto_server() -> Iterator[S3Server]:
    if importlib.util.find_spec("moto.server") is None:
        unavailable("moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_listening(endpoint, proc)
        yield S3Server(endpoint)
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(endpoint: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            pytest.fail(f"moto's server exited at start (code {proc.returncode})")
        try:
            httpx.get(endpoint, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    pytest.fail("moto's server did not answer within 30 s")
