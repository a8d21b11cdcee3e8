"""Browser fixtures: headless Chromium (Debian's, at /usr/bin/chromium) driven by Playwright,
and the running stack of the integration suite."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import unavailable

CHROMIUM = os.environ.get("DOCPIPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not os.path.exists(CHROMIUM):
        unavailable(f"chromium not found at {CHROMIUM} (set DOCPIPE_CHROMIUM)")
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        unavailable(f"playwright is not installed: {exc}")
    async with async_playwright() as pw:
        try:
            launched = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
        except Exception as exc:  # any launch failure means unavailable
            unavailable(f"chromium did not start: {type(exc).__name__}: {exc}")
        try:
            yield launched
        finally:
            await launched.close()
