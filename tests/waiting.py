"""Waiting on a condition, not on a sleep: a test that sleeps and then assumes the world has
moved on races the machine's load (a 0.3 s sleep failed 4 times in 5 on a busy machine)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def wait_until(
    condition: Callable[[], bool | Awaitable[bool]],
    *,
    timeout: float = 30.0,
    every: float = 0.01,
    what: str = "the condition",
) -> None:
    """Return as soon as `condition()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(every)
