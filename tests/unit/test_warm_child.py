"""Warm extraction children (shared.sandbox.WarmPool), the extractor's local scheduler and the
short-lived cache of require_active."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from services.extractor.scheduler import Scheduler
from services.extractor.service import CHILD_ARGV, WARM_CHILD_ARGV
from services.extractor.spec import ExtractSpec
from shared.jobs import clear_job_cache, forget_job, require_active
from shared.sandbox import WarmPool, kill_job, run_sandboxed, running_children
from tests.unit.extractor_fixtures import text_pdf
from tests.waiting import wait_until

LIMITS: dict[str, Any] = {"cpu_seconds": 60, "memory_mb": 1536}


def script(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def test_a_warm_child_extracts_and_is_reused(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["first page words here", "second page words here"])
    spec = ExtractSpec(path=str(pdf), format="pdf", blob_dir=str(tmp_path / "blobs"))
    pool = WarmPool(WARM_CHILD_ARGV, size=1, **LIMITS)
    pool.fill()
    try:
        async with asyncio.timeout(30):
            while pool.idle < 1:
                await asyncio.sleep(0.01)
        warm_pid = pool._idle[0].proc.pid
        lines: list[dict[str, Any]] = []

        async def on_line(line: bytes) -> None:
            lines.append(json.loads(line))

        result = await run_sandboxed(
            CHILD_ARGV, job_id=None, timeout=60, stdin=spec.to_json(), on_line=on_line,
            warm=pool, **LIMITS,
        )  # fmt: skip
        assert result.failure is None, result.stderr
        assert result.returncode == 0
        assert [r["type"] for r in lines] == ["meta", "page", "page"]
        # The same child waits for the next document: no start-up paid again.
        assert pool.idle == 1 and pool._idle[0].proc.pid == warm_pid
    finally:
        await pool.close()
    assert pool.idle == 0


async def test_a_one_job_pool_replaces_its_child(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["first page words here"])
    spec = ExtractSpec(path=str(pdf), format="pdf", blob_dir=str(tmp_path / "blobs"))
    pool = WarmPool(WARM_CHILD_ARGV, size=1, max_jobs_per_child=1, **LIMITS)
    pool.fill()
    try:
        async with asyncio.timeout(30):
            while pool.idle < 1:
                await asyncio.sleep(0.01)
        warm_pid = pool._idle[0].proc.pid
        result = await run_sandboxed(
            CHILD_ARGV, job_id=None, timeout=60, stdin=spec.to_json(), warm=pool, **LIMITS
        )
        assert result.failure is None, result.stderr
        async with asyncio.timeout(30):
            while pool.idle < 1:
                await asyncio.sleep(0.01)
        assert pool._idle[0].proc.pid != warm_pid
    finally:
        await pool.close()


async def test_cancel_kills_the_warm_child_that_took_the_job() -> None:
    # A one-job child (reads its job up to EOF); test_sandbox_reuse covers reused children.
    pool = WarmPool(
        script("import sys, time; sys.stdin.read(); time.sleep(60)"),
        size=1,
        max_jobs_per_child=1,
        **LIMITS,
    )
    pool.fill()
    job = uuid.uuid4()
    try:
        async with asyncio.timeout(30):
            while pool.idle < 1:
                await asyncio.sleep(0.01)
        task = asyncio.create_task(
            run_sandboxed(("false",), job_id=job, timeout=60, stdin=b"{}", warm=pool, **LIMITS)
        )
        await wait_until(lambda: running_children(job) == 1, what="a child holds the job")
        started = time.monotonic()
        assert kill_job(job) == 1
        result = await asyncio.wait_for(task, 5)
        assert result.failure == "The job was cancelled."
        assert time.monotonic() - started < 2
    finally:
        await pool.close()


async def run_warm(pool: WarmPool, limits: dict[str, Any]) -> Any:
    return await run_sandboxed(("false",), job_id=None, timeout=30, stdin=b"x", warm=pool, **limits)


async def test_cpu_limit_counts_from_the_job_not_from_the_start() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
    code = (
        burn.format(s=1.3)  # start-up work: more than the job's limit
        + "import sys\nfrom shared.sandbox import apply_job_cpu_limit\n"
        + "sys.stdin.read()\napply_job_cpu_limit()\n"
        + burn.format(s="{job}")
    )
    limits: dict[str, Any] = {"cpu_seconds": 1, "memory_mb": 1536}
    # A job within its limit finishes, though the child's total CPU time is over it.
    pool = WarmPool(script(code.format(job=0.3)), size=1, max_jobs_per_child=1, **limits)
    pool.fill()
    try:
        await wait_until(lambda: pool.idle >= 1, what="the warm child is up")
        result = await run_warm(pool, limits)
        assert result.failure is None, result
    finally:
        await pool.close()
    # A job that overruns is stopped by the CPU limit.
    pool = WarmPool(script(code.format(job=30)), size=1, max_jobs_per_child=1, **limits)
    pool.fill()
    try:
        await wait_until(lambda: pool.idle >= 1, what="the warm child is up")
        started = time.monotonic()
        result = await run_warm(pool, limits)
        assert result.failure is not None and "CPU-time limit" in result.failure
        # One CPU-second, not the job's 30: generous in wall time, as a loaded machine gives
        # the child a fraction of a core (17 s was seen at a load average of 20).
        assert time.monotonic() - started < 25
    finally:
        await pool.close()


async def test_without_a_ready_warm_child_the_job_runs_cold() -> None:
    pool = WarmPool(script("import sys; sys.stdin.read()"), size=0, max_jobs_per_child=1, **LIMITS)
    result = await run_sandboxed(
        script("import sys; print(sys.stdin.read())"), job_id=None, timeout=30, stdin=b"cold",
        warm=pool, **LIMITS,
    )  # fmt: skip
    assert result.failure is None


async def test_scheduler_runs_high_priority_then_small_first() -> None:
    scheduler = Scheduler(1, aging_seconds=1000)
    order: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, priority: int, size: int) -> None:
        async with scheduler.slot(priority=priority, size=size):
            order.append(name)
            await gate.wait()

    first = asyncio.create_task(job("first", 0, 10**9))
    await asyncio.sleep(0)
    rest = [
        asyncio.create_task(job(name, prio, size))
        for name, prio, size in [("big", 0, 10**6), ("small", 0, 10), ("urgent", 5, 10**7)]
    ]
    await asyncio.sleep(0.01)
    assert order == ["first"] and scheduler.waiting == 3
    gate.set()
    await asyncio.gather(first, *rest)
    assert order == ["first", "urgent", "small", "big"]
    assert scheduler.running == 0


async def test_scheduler_survives_a_cancelled_waiter() -> None:
    scheduler = Scheduler(1)
    await scheduler.acquire()
    waiter = asyncio.create_task(scheduler.acquire(size=1))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    scheduler.release()
    assert scheduler.running == 0 and scheduler.waiting == 0
    await asyncio.wait_for(scheduler.acquire(), 1)


async def test_require_active_caches_and_a_cancel_forgets(db_pool: asyncpg.Pool) -> None:
    clear_job_cache()
    job = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO jobs (job_id, tenant, filename, document_uri, size_bytes, content_type, "
        "ocr_mode, priority, created_at) VALUES ($1, 't', 'f.txt', 'blob://x', 1, 'text/plain', "
        "'never', 0, now())",
        job,
    )
    try:
        await require_active(db_pool, job)
        await db_pool.execute("UPDATE jobs SET status = 'cancelled' WHERE job_id = $1", job)
        await require_active(db_pool, job)  # cached "active" for a moment
        forget_job(job)  # what the job.cancelled broadcast does
        try:
            await require_active(db_pool, job)
        except Exception as exc:
            assert type(exc).__name__ == "JobGone"
        else:
            raise AssertionError("a cancelled job stayed active")
    finally:
        await db_pool.execute("DELETE FROM jobs WHERE job_id = $1", job)
        clear_job_cache()
