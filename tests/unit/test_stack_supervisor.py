"""scripts.stack restarts a service that exits: at once after a long run, with a growing wait
when it keeps dying straight after starting, and never once the stack is stopping."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import pytest

from scripts import stack as stack_module
from scripts.stack import ServiceProcess, Stack


def exiting_stack(monkeypatch: pytest.MonkeyPatch) -> tuple[Stack, list[float]]:
    """A one-service stack whose service exits with status 3 at once; returns the stack and
    the monotonic time of every start."""
    stack = Stack(services=("ingest",))
    spawned: list[float] = []

    async def spawn(svc: ServiceProcess) -> None:
        spawned.append(time.monotonic())
        svc.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.exit(3)"
        )

    monkeypatch.setattr(stack, "_spawn", spawn)
    return stack, spawned


async def until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_service_that_keeps_dying_early_waits_longer_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack, spawned = exiting_stack(monkeypatch)
    await stack.start()
    try:
        await until(lambda: len(spawned) >= 3, timeout=20)
    finally:
        await stack.stop()
    gaps = [b - a for a, b in zip(spawned, spawned[1:], strict=False)]
    assert 0.9 < gaps[0] < 1.9, gaps  # 1 s, then 2 s
    assert 1.9 < gaps[1] < 2.9, gaps
    assert stack.deaths()["ingest"][:2] == [3, 3]
    assert stack.services["ingest"].restarts == len(spawned) - 1


async def test_a_service_that_ran_long_is_restarted_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stack_module, "STABLE_SECONDS", 0.0)  # every run counts as long
    stack, spawned = exiting_stack(monkeypatch)
    await stack.start()
    try:
        await until(lambda: len(spawned) >= 4, timeout=20)
    finally:
        await stack.stop()
    gaps = [b - a for a, b in zip(spawned, spawned[1:], strict=False)]
    assert all(stack_module.RESTART_DELAY <= gap < 0.9 for gap in gaps[:3]), gaps


async def test_nothing_is_restarted_once_the_stack_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    stack, spawned = exiting_stack(monkeypatch)
    await stack.start()
    await until(lambda: bool(stack.deaths()), timeout=10)  # exited, waiting to restart
    await stack.stop()
    assert len(spawned) == 1
    assert all(task.done() for task in stack._watchers)
