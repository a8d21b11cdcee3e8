"""Killed workers: SIGKILL the extractor, the OCR worker and the analyzer in the middle of a
multi-page job. The stack restarts them, the unacknowledged message comes back, and the job
completes with exactly the result an undisturbed run of the same file gives."""

from __future__ import annotations

import asyncio
import io
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import text_image
from tests.reliability.conftest import ReliabilityStack, comparable_result

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

PAGES = 30
SCANNED = {4, 12, 20, 28}  # pages without a text layer: rendered and OCRed
WORDS = ("alpha", "beta", "gamma", "delta", "invoice", "total", "revenue", "contract", "annex")


@pytest.fixture(scope="module")
def long_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 dense pages (many small text runs, so extraction takes a while) and 4 scans."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    path = tmp_path_factory.mktemp("kill") / "long-report.pdf"
    c = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    for number in range(1, PAGES + 1):
        if number in SCANNED:
            image = text_image(
                [f"Scanned page {number} of the report", "The quick brown fox jumps"]
            )
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            buf.seek(0)
            scale = (width - 72) / image.width
            c.drawImage(
                ImageReader(buf),
                36,
                height - 36 - image.height * scale,
                width=image.width * scale,
                height=image.height * scale,
            )
        else:
            c.setFont("Helvetica", 6)
            y = height - 40
            for row in range(100):
                x = 30.0
                for col in range(14):
                    word = WORDS[(number * 7 + row * 3 + col) % len(WORDS)]
                    c.drawString(x, y, f"{word}{(row * col + number) % 97}")
                    x += 39
                y -= 7
        c.showPage()
    c.save()
    return path


Condition = Callable[[dict[str, Any]], bool]


async def wait_for_progress(
    rs: ReliabilityStack, job_id: str, condition: Condition, timeout: float = 60.0
) -> dict[str, Any] | None:
    """Poll the progress service until `condition(snapshot)`; None if the job ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = await rs.progress(job_id)
        if snapshot is not None:
            if condition(snapshot):
                return snapshot
            if snapshot["final"]:
                return None
        await asyncio.sleep(0.02)
    raise TimeoutError(f"job {job_id} never reached the awaited point")


def mid_stage(stage: str) -> Condition:
    """The job is in the middle of the stage: its work announced and not all done yet. The
    progress service lags a little behind the workers (a page's chunk events come first), so
    waiting for "some done" would come too late for a stage that takes a second or two."""

    def condition(snapshot: dict[str, Any]) -> bool:
        counts = snapshot["stages"][stage]
        if stage == "extract":  # extraction.started is the first event: the document is open
            return snapshot["pages_total"] is not None and counts["done"] < snapshot["pages_total"]
        return bool(counts["done"] < counts["total"])

    return condition


async def redelivered_to_successor(rs: ReliabilityStack, victim: str, restarts: int) -> int:
    """Wait for the stack to restart the victim; how many messages the new process received
    (after a kill in the middle of work, at least the unacknowledged one comes back)."""
    deadline = time.monotonic() + 30
    while rs.stack.services[victim].restarts == restarts:
        assert time.monotonic() < deadline, f"{victim} was not restarted"
        await asyncio.sleep(0.1)
    await rs.stack.wait_ready(30)
    counts = (await rs.metrics())[victim]
    return sum(n for (_queue, outcome), n in counts.items() if outcome == "received")


VICTIMS = (("extractor", "extract"), ("ocr", "ocr"), ("analyzer", "analyze"))


async def test_killed_workers_lose_nothing_and_duplicate_nothing(
    private_stack: Any, long_pdf: Path
) -> None:
    async with private_stack("kill") as rs:
        started = time.monotonic()
        baseline_job = await rs.client.submit_ok(long_pdf)
        final = await rs.client.wait(baseline_job, timeout=120)
        assert final["status"] == "completed", final
        baseline = comparable_result((await rs.client.result(baseline_job)).json())
        assert len(baseline["pages"]) == PAGES
        assert {p["number"] for p in baseline["pages"] if p["source"] == "ocr"} == SCANNED
        print(f"undisturbed run: {time.monotonic() - started:.1f} s")

        kills: dict[str, list[int]] = {}
        for victim, stage in VICTIMS:
            # A missed window (the stage finished between two polls) is retried on a new job.
            for _attempt in range(3):
                t0 = time.monotonic()
                # force: the same document would otherwise reuse the baseline's result at once.
                job = await rs.client.submit_ok(long_pdf, force=True)
                snapshot = await wait_for_progress(rs, job, mid_stage(stage))
                if snapshot is None:
                    await rs.client.wait(job, timeout=120)
                    continue
                restarts = rs.stack.services[victim].restarts
                rs.stack.signal(victim, signal.SIGKILL)
                kills.setdefault(victim, []).append(-signal.SIGKILL)
                print(f"killed {victim} at {stage} {snapshot['stages'][stage]}")
                final = await rs.client.wait(job, timeout=120)
                assert final["status"] == "completed", (victim, final)
                result = comparable_result((await rs.client.result(job)).json())
                assert result == baseline, f"result after killing {victim} differs"
                redone = await redelivered_to_successor(rs, victim, restarts)
                print(
                    f"{victim} kill run: {time.monotonic() - t0:.1f} s; its successor got "
                    f"{redone} message(s)"
                )
                if redone == 0:  # the kill hit no work in flight: try again on a new job
                    continue
                break
            else:
                pytest.fail(f"never caught the {stage} stage in the middle")
        assert rs.stack.deaths() == kills, "only the killed processes died"
