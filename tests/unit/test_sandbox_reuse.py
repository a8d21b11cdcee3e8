"""Children of a WarmPool serve several jobs one after another (shared.sandbox's job protocol),
with every per-job guarantee of the sandbox kept: CPU allowance, timeout, kill by job, stderr."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from services.extractor.service import CHILD_ARGV, WARM_CHILD_ARGV
from services.extractor.spec import ExtractSpec
from shared.sandbox import (
    SandboxOutcome,
    SandboxResult,
    WarmPool,
    judge,
    kill_job,
    run_sandboxed,
    running_children,
)
from tests.unit.extractor_fixtures import text_pdf
from tests.waiting import wait_until

LIMITS: dict[str, Any] = {"cpu_seconds": 60, "memory_mb": 1536}

# A child that speaks the job protocol; each job's payload says what to do. Every job first
# prints its pid, so a test can tell which process served it.
SERVER = r"""
import json, os, sys, time
from shared.sandbox import apply_job_cpu_limit, end_job, read_job

out = os.fdopen(os.dup(1), "w", buffering=1)
while (job := read_job(sys.stdin.buffer)) is not None:
    payload, cpu_seconds = job
    apply_job_cpu_limit(cpu_seconds)
    cmd = json.loads(payload)
    out.write(json.dumps({"type": "pid", "pid": os.getpid()}) + "\n")
    for line in cmd.get("lines", []):
        out.write(json.dumps(line) + "\n")
    if "stderr" in cmd:
        sys.stderr.write(cmd["stderr"])
    if "stderr_bytes" in cmd:
        sys.stderr.write("e" * cmd["stderr_bytes"])
    if "burn" in cmd:
        t = time.process_time()
        while time.process_time() - t < cmd["burn"]:
            pass
    if "sleep" in cmd:
        time.sleep(cmd["sleep"])
    if "exit" in cmd:
        out.flush()
        sys.exit(cmd["exit"])
    end_job(out, reuse=cmd.get("reuse", True))
"""


def server_argv() -> tuple[str, ...]:
    return (sys.executable, "-c", SERVER)


async def ready(pool: WarmPool, n: int = 1) -> None:
    pool.fill()
    async with asyncio.timeout(30):
        while pool.idle < n:
            await asyncio.sleep(0.01)


async def job(
    pool: WarmPool, cmd: dict[str, Any], *, job_id: uuid.UUID | None = None, **kw: Any
) -> tuple[SandboxResult, list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    async def on_line(line: bytes) -> None:
        lines.append(json.loads(line))

    limits = {**LIMITS, **kw}
    limits.setdefault("timeout", 30)
    result = await run_sandboxed(
        ("false",), job_id=job_id, stdin=json.dumps(cmd).encode(), on_line=on_line, warm=pool,
        **limits,
    )  # fmt: skip
    return result, lines


def pid_of(lines: list[dict[str, Any]]) -> int:
    return next(line["pid"] for line in lines if line["type"] == "pid")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] not in "ZX"
    except FileNotFoundError:
        return False


async def test_an_extraction_child_serves_three_documents_in_a_row(tmp_path: Path) -> None:
    docs = [
        text_pdf(tmp_path / "a.pdf", ["alpha page one words", "alpha page two words"]),
        text_pdf(tmp_path / "b.pdf", ["bravo only page words"]),
        text_pdf(tmp_path / "c.pdf", [f"charlie page {i} words" for i in range(3)]),
    ]
    pool = WarmPool(WARM_CHILD_ARGV, size=1, **LIMITS)
    await ready(pool)
    pid = pool._idle[0].proc.pid
    try:
        for n, (pdf, pages, word) in enumerate(
            zip(docs, (2, 1, 3), ("alpha", "bravo", "charlie"), strict=True), start=1
        ):
            spec = ExtractSpec(path=str(pdf), format="pdf", blob_dir=str(tmp_path / "blobs"))
            lines: list[dict[str, Any]] = []

            async def on_line(line: bytes, lines: list[dict[str, Any]] = lines) -> None:
                lines.append(json.loads(line))

            result = await run_sandboxed(
                CHILD_ARGV, job_id=uuid.uuid4(), timeout=60, stdin=spec.to_json(),
                on_line=on_line, warm=pool, **LIMITS,
            )  # fmt: skip
            assert result.failure is None and result.returncode == 0, result
            # The end-of-job mark is the sandbox's: the records are the document's, only.
            assert [r["type"] for r in lines] == ["meta"] + ["page"] * pages
            assert lines[0]["pages_total"] == pages
            assert all(r["text"].startswith(word) for r in lines[1:])
            assert pool.idle == 1 and pool._idle[0].proc.pid == pid
            assert pool._idle[0].jobs == n
    finally:
        await pool.close()
    assert not alive(pid)


async def test_an_extraction_child_is_not_reused_after_a_fatal_record(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["one " * 20, "two " * 20])
    pool = WarmPool(WARM_CHILD_ARGV, size=1, **LIMITS)
    await ready(pool)
    first = pool._idle[0].proc.pid
    try:
        lines: list[dict[str, Any]] = []

        async def on_line(line: bytes) -> None:
            lines.append(json.loads(line))

        spec = ExtractSpec(path=str(pdf), format="pdf", blob_dir=str(tmp_path), max_pages=1)
        result = await run_sandboxed(
            CHILD_ARGV, job_id=None, timeout=60, stdin=spec.to_json(), on_line=on_line,
            warm=pool, **LIMITS,
        )  # fmt: skip
        # The job itself ended cleanly (its failure is in the record); the child is gone.
        assert result.failure is None and result.returncode == 0
        assert [r["type"] for r in lines] == ["fatal"]
        assert not alive(first)
        await ready(pool)
        assert pool._idle[0].proc.pid != first
    finally:
        await pool.close()


async def test_each_job_gets_its_records_and_its_stderr() -> None:
    pool = WarmPool(server_argv(), size=1, **LIMITS)
    await ready(pool)
    try:
        pids = set()
        for n in range(3):
            result, lines = await job(
                pool, {"lines": [{"type": "page", "n": n}], "stderr": f"warning of job {n}\n"}
            )
            assert result.failure is None and result.returncode == 0
            assert lines[1:] == [{"type": "page", "n": n}]
            assert result.stderr == f"warning of job {n}\n"
            pids.add(pid_of(lines))
        assert len(pids) == 1
        # A chatty job cannot block the child on a full pipe; its stderr is cut, not the next.
        result, lines = await job(pool, {"stderr_bytes": 1_000_000})
        assert result.failure is None and 0 < len(result.stderr) <= 64 * 1024
        result, lines = await job(pool, {"stderr": "quiet\n"})
        assert result.stderr == "quiet\n" and pid_of(lines) in pids
    finally:
        await pool.close()


async def test_kill_job_kills_the_reused_child_at_work_on_it() -> None:
    pool = WarmPool(server_argv(), size=1, **LIMITS)
    await ready(pool)
    try:
        done_job = uuid.uuid4()
        result, lines = await job(pool, {}, job_id=done_job)
        pid = pid_of(lines)
        slow_job = uuid.uuid4()
        task = asyncio.create_task(job(pool, {"sleep": 60}, job_id=slow_job))
        await wait_until(lambda: running_children(slow_job) == 1, what="a child holds the job")
        # The child served done_job before: cancelling that job must not touch it now.
        assert kill_job(done_job) == 0
        assert not task.done() and alive(pid)
        started = time.monotonic()
        assert kill_job(slow_job) == 1
        result, lines = await asyncio.wait_for(task, 5)
        assert result.failure == "The job was cancelled."
        assert result.outcome is SandboxOutcome.CANCELLED
        assert pid_of(lines) == pid and time.monotonic() - started < 2
        assert not alive(pid)
        # The pool lost that child; the next job gets another one.
        result, lines = await job(pool, {})
        assert result.failure is None and pid_of(lines) != pid
    finally:
        await pool.close()


async def test_not_reused_after_a_timeout_a_crash_or_when_it_says_so() -> None:
    pool = WarmPool(server_argv(), size=1, **LIMITS)
    await ready(pool)
    try:
        result, lines = await job(pool, {"sleep": 30}, timeout=0.5)
        assert result.failure is not None and "time limit" in result.failure
        assert result.outcome is SandboxOutcome.TIMEOUT
        assert not alive(pid_of(lines))
        result, lines = await job(pool, {"exit": 3})
        assert result.failure == "Processing failed (exit status 3)." and result.returncode == 3
        assert result.outcome is SandboxOutcome.FAILED
        result, lines = await job(pool, {"reuse": False})
        assert result.failure is None and result.returncode == 0
        assert result.outcome is SandboxOutcome.OK
        assert not alive(pid_of(lines))
        pids = {pid_of(lines)}
        result, lines = await job(pool, {})
        assert result.failure is None and pid_of(lines) not in pids
    finally:
        await pool.close()


async def test_the_cpu_allowance_is_per_job() -> None:
    limits: dict[str, Any] = {"cpu_seconds": 1, "memory_mb": 1536}
    pool = WarmPool(server_argv(), size=1, **limits)
    await ready(pool)
    try:
        pids = set()
        # Three jobs of 0.6 s each: 1.8 s in one process, though its allowance is 1 s a job.
        for _ in range(3):
            result, lines = await job(pool, {"burn": 0.6}, **limits)
            assert result.failure is None, result
            pids.add(pid_of(lines))
        assert len(pids) == 1
        # A job that overruns its allowance is stopped by the CPU limit, not the wall clock.
        started = time.monotonic()
        result, lines = await job(pool, {"burn": 30}, **limits)
        assert result.failure is not None and "CPU-time limit" in result.failure, result
        assert result.outcome is SandboxOutcome.KILLED
        assert time.monotonic() - started < 10 and pid_of(lines) in pids
        assert not alive(pid_of(lines))
    finally:
        await pool.close()


async def test_jobs_per_child_are_capped() -> None:
    pool = WarmPool(server_argv(), size=1, max_jobs_per_child=2, **LIMITS)
    await ready(pool)
    try:
        pids = [pid_of((await job(pool, {}))[1]) for _ in range(5)]
        assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
        assert not alive(pids[0]) and not alive(pids[2])
    finally:
        await pool.close()


async def test_a_job_that_finds_no_idle_child_starts_one_that_joins_the_pool() -> None:
    pool = WarmPool(server_argv(), size=1, **LIMITS)
    await ready(pool)
    try:
        # Two at once: one takes the idle child, the other starts one; afterwards only `size`
        # children stay idle and the other is ended.
        (r1, l1), (r2, l2) = await asyncio.gather(
            job(pool, {"sleep": 0.3}), job(pool, {"sleep": 0.3})
        )
        assert r1.failure is None and r2.failure is None
        assert pid_of(l1) != pid_of(l2)
        assert pool.idle == 1 and pool.busy == 0
        kept = pool._idle[0].proc.pid
        assert kept in (pid_of(l1), pid_of(l2))
        assert [alive(pid_of(l1)), alive(pid_of(l2))].count(True) == 1
        result, lines = await job(pool, {})
        assert pid_of(lines) == kept
    finally:
        await pool.close()


async def test_max_children_bounds_children_kept_for_reuse() -> None:
    pool = WarmPool(server_argv(), size=2, max_children=2, **LIMITS)
    await ready(pool, 2)
    try:
        # Another job of a pool user runs in a child of its own (other limits: cold), so it
        # counts as one of the two: the warm child finishing meanwhile is not kept.
        other = asyncio.create_task(
            run_sandboxed(
                (sys.executable, "-c", "import time; time.sleep(3)"),
                job_id=None,
                timeout=30,
                cpu_seconds=5,
                memory_mb=512,
                warm=pool,
            )  # fmt: skip
        )
        await wait_until(lambda: pool.busy == 1, what="the other job holds its child")
        result, lines = await job(pool, {})
        assert result.failure is None
        # busy 1 (other) + 1 idle = 2: the job's child was not taken back.
        assert pool.idle == 1 and not alive(pid_of(lines))
        assert (await other).failure is None
    finally:
        await pool.close()


async def test_close_ends_idle_children_and_those_coming_back() -> None:
    pool = WarmPool(server_argv(), size=1, **LIMITS)
    await ready(pool)
    idle_pid = pool._idle[0].proc.pid
    task = asyncio.create_task(job(pool, {"sleep": 0.5}))
    await asyncio.sleep(0.1)
    other = asyncio.create_task(job(pool, {"sleep": 0.5}))
    await asyncio.sleep(0.1)
    await pool.close()
    (r1, l1), (r2, l2) = await asyncio.gather(task, other)
    assert r1.failure is None and r2.failure is None
    assert pool.idle == 0
    assert not any(alive(pid) for pid in (idle_pid, pid_of(l1), pid_of(l2)))


async def test_an_idle_child_exits_when_its_parent_closes_stdin() -> None:
    pool = WarmPool(WARM_CHILD_ARGV, size=1, **LIMITS)
    await ready(pool)
    child = pool._idle[0]
    try:
        assert child.proc.stdin is not None
        child.proc.stdin.close()
        assert await asyncio.wait_for(child.proc.wait(), 30) == 0
    finally:
        await pool.close()
    assert os.environ.get("DOCPIPE_SANDBOX_REUSE") is None  # set for the child only


ONE_JOB: dict[str, Any] = {"job_id": None, "timeout": 20, "cpu_seconds": 5, "memory_mb": 512}


def python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


async def test_a_one_job_child_says_how_it_ended() -> None:
    """Each way a one-job child can end has its outcome; the sentence is for people."""
    ok = await run_sandboxed(python("print('hi')"), **ONE_JOB)
    assert ok.outcome is SandboxOutcome.OK and ok.ok and ok.failure is None
    failed = await run_sandboxed(python("raise SystemExit(4)"), **ONE_JOB)
    assert failed.outcome is SandboxOutcome.FAILED and failed.returncode == 4
    crashed = await run_sandboxed(
        python("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"), **ONE_JOB
    )
    assert crashed.outcome is SandboxOutcome.FAILED and "crashed" in (crashed.failure or "")
    slow = await run_sandboxed(python("import time; time.sleep(30)"), **{**ONE_JOB, "timeout": 0.5})
    assert slow.outcome is SandboxOutcome.TIMEOUT and not slow.ok
    burn = await run_sandboxed(python("while True: pass"), **{**ONE_JOB, "cpu_seconds": 1})
    assert burn.outcome is SandboxOutcome.KILLED and "CPU-time limit" in (burn.failure or "")
    job_id = uuid.uuid4()
    started = asyncio.Event()

    async def on_line(_line: bytes) -> None:
        started.set()

    sleeper = python("import time; print('up', flush=True); time.sleep(30)")
    task = asyncio.create_task(
        run_sandboxed(sleeper, on_line=on_line, **{**ONE_JOB, "job_id": job_id})
    )
    await asyncio.wait_for(started.wait(), 10)  # the child is running its job
    assert kill_job(job_id) == 1
    cancelled = await task
    assert (
        cancelled.outcome is SandboxOutcome.CANCELLED
        and cancelled.failure == "The job was cancelled."
    )
    # A job cancelled before it starts never starts.
    later = await run_sandboxed(python("print('never')"), **{**ONE_JOB, "job_id": job_id})
    assert later.outcome is SandboxOutcome.CANCELLED


def test_judging_an_exit() -> None:
    limits: dict[str, Any] = {"cpu_seconds": 3, "memory_mb": 100}
    assert judge(0, timeout=None, cancelled=False, **limits) == (SandboxOutcome.OK, None)
    assert judge(0, timeout=None, cancelled=True, **limits)[0] is SandboxOutcome.CANCELLED
    # A timeout is what stopped the child, whatever else happened.
    outcome, sentence = judge(-9, timeout=2.5, cancelled=True, **limits)
    assert outcome is SandboxOutcome.TIMEOUT and sentence is not None and "2.5 s" in sentence
    for signal_kill in (-9, -24):  # SIGKILL (memory, the kernel), SIGXCPU (CPU time)
        outcome, sentence = judge(signal_kill, timeout=None, cancelled=False, **limits)
        assert outcome is SandboxOutcome.KILLED and sentence is not None and "3 s" in sentence
    assert judge(-11, timeout=None, cancelled=False, **limits)[0] is SandboxOutcome.FAILED
    assert judge(2, timeout=None, cancelled=False, **limits)[0] is SandboxOutcome.FAILED
