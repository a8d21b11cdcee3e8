"""What every benchmark shares: a private live stack, the corpus, the client, the machine
description and small statistics helpers."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import websockets

from scripts.stack import Stack, stack_ports
from shared.db import DEV_RUNTIME_ROLE, create_pool, drop_database, with_role
from shared.events import TERMINAL_STATUSES, JobStatus
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-key"
TENANT = "bench"
# Two more tenants, for the fair-share benchmark (benchmarks/fair_share.py): key -> tenant.
FAIR_KEYS = {"bench-fair-a": "bench-a", "bench-fair-b": "bench-b"}


class CorpusMissing(RuntimeError):
    """A benchmark's corpus folder is absent or empty; the message says where it goes."""


def corpus_dir() -> Path:
    """The shared corpus (never copied into the repo): DOCPIPE_CORPUS or ../shared/corpus."""
    return Path(os.environ.get("DOCPIPE_CORPUS", str(ROOT.parent / "shared" / "corpus"))).resolve()


def corpus_files(folder: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The corpus folder's files with one of the suffixes, sorted; CorpusMissing when none."""
    path = corpus_dir() / folder
    found = (
        sorted(p for p in path.glob("*") if p.suffix.lower() in suffixes) if path.is_dir() else []
    )
    if not found:
        raise CorpusMissing(
            f"No {'/'.join(suffixes)} files in {path}: set DOCPIPE_CORPUS to the corpus folder."
        )
    return found


def http_client() -> httpx.AsyncClient:
    """The benchmarks' HTTP client. Idle connections are dropped after 2 s, before uvicorn's
    5 s keep-alive closes them from its side: reusing a connection the server is closing at
    that moment fails the request (docs/decisions/0002)."""
    return httpx.AsyncClient(timeout=120, limits=httpx.Limits(keepalive_expiry=2.0))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def distribution(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 4),
        "p95": round(percentile(values, 95), 4),
        "p99": round(percentile(values, 99), 4),
        "max": round(max(values), 4) if values else 0.0,
        "mean": round(statistics.fmean(values), 4) if values else 0.0,
    }


def machine() -> dict[str, Any]:
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    dists = (
        "pypdf",
        "pypdfium2",
        "pdfminer.six",
        "tesserocr",
        "faststream",
        "aio-pika",
        "asyncpg",
        "fastapi",
    )
    for dist in (*dists, "psutil"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": cpu_model,
        "os": platform.platform(),
        "python": platform.python_version(),
        "tesseract": _tool_version(["tesseract", "--version"]),  # the CLI: the OCR baseline
        "tesseract_in_service": _tesserocr_tesseract(),
        "versions": versions,
    }


def _tesserocr_tesseract() -> str | None:
    """The tesseract that tesserocr carries (the OCR service's engine)."""
    try:
        import tesserocr
    except ImportError:
        return None
    return str(tesserocr.tesseract_version()).splitlines()[0]


def _tool_version(argv: list[str]) -> str | None:
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else None


@dataclass
class BenchStack:
    """A running stack of its own: private database, bus prefix, blob dir and ports."""

    stack: Stack
    settings: Settings
    pool: asyncpg.Pool
    env: dict[str, str]
    failures: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return self.stack.url("ingest")

    @property
    def ws(self) -> str:
        return self.stack.url("progress").replace("http://", "ws://")

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}

    async def submit(
        self,
        client: httpx.AsyncClient,
        data: bytes,
        name: str,
        *,
        ocr: str | None = "never",
        priority: int = 0,
        force: bool = True,
        key: str = API_KEY,
    ) -> tuple[str, float]:
        """Upload; returns the job id and the monotonic time the upload was accepted.
        `ocr` None: the field is left out, so the job gets the default a user gets.
        `force`: process it even when the same document was processed before (benchmarks
        measure processing, not the reuse of a duplicate's result). `key`: the tenant's."""
        form = {"priority": str(priority), "force": str(force).lower()}
        if ocr is not None:
            form["ocr"] = ocr
        response = await client.post(
            f"{self.api}/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (name, data)},
            data=form,
        )
        accepted = time.monotonic()
        if response.status_code != 202:
            raise RuntimeError(f"upload of {name} refused: {response.status_code} {response.text}")
        return str(response.json()["job_id"]), accepted

    async def wait_all(self, job_ids: list[str], timeout: float = 900.0) -> dict[str, float]:
        """Poll the database until every job is terminal; returns each job's end (monotonic).

        A job's end is when its terminal state was committed (jobs.updated_at, the same
        machine's clock), not when the poll saw it: so the poll can be slow (it runs on the
        cores it measures) without coarsening the figures."""
        ids = [uuid.UUID(j) for j in job_ids]
        ended: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while len(ended) < len(ids):
            rows = await self.pool.fetch(
                "SELECT job_id, status, extract(epoch FROM updated_at)::float8 AS at "
                "FROM jobs WHERE job_id = ANY($1::uuid[])",
                ids,
            )
            # Wall clock to monotonic: both read now, so the offset is exact to microseconds.
            offset = time.monotonic() - time.time()
            for row in rows:
                if row["status"] in TERMINAL_STATUSES and str(row["job_id"]) not in ended:
                    ended[str(row["job_id"])] = row["at"] + offset
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - len(ended)} jobs still running after {timeout} s")
            await asyncio.sleep(0.1)
        return ended

    async def job_texts(self, job_id: str) -> tuple[str, str]:
        """(status, the job's text: text layer and OCR of every page, in page order)."""
        jid = uuid.UUID(job_id)
        status = await self.pool.fetchval("SELECT status FROM jobs WHERE job_id = $1", jid)
        rows = await self.pool.fetch(
            "SELECT coalesce(text, '') AS t, coalesce(ocr_text, '') AS o "
            "FROM job_pages WHERE job_id = $1 ORDER BY page",
            jid,
        )
        return str(status), "\n".join((r["t"] + "\n" + r["o"]).strip() for r in rows)

    def check_job(self, what: str, status: str, text: str, baseline_has_text: bool) -> None:
        """A benchmark fails if a job fails, or returns no text where a baseline found some."""
        if status != JobStatus.COMPLETED:
            self.failures.append(f"{what}: job ended {status}")
        elif baseline_has_text and not text.strip():
            self.failures.append(f"{what}: empty text where the baseline found text")

    async def first_ws_message(self, job_id: str, predicate: Any, timeout: float = 30.0) -> float:
        """Monotonic time of the first WebSocket message for the job that satisfies predicate."""
        url = f"{self.ws}/v1/jobs/{job_id}/events?token={API_KEY}"
        async with asyncio.timeout(timeout), websockets.connect(url) as conn:
            async for raw in conn:
                msg = json.loads(raw)
                if predicate(msg):
                    return time.monotonic()
                if msg.get("final"):
                    break
        raise RuntimeError(f"job {job_id} ended without the awaited message")

    def service_pids(self) -> dict[str, int]:
        return {
            name: svc.proc.pid
            for name, svc in self.stack.services.items()
            if svc.proc is not None and svc.proc.returncode is None
        }


@asynccontextmanager
async def bench_stack(
    extra_env: dict[str, str] | None = None, log_dir: Path | None = None
) -> AsyncIterator[BenchStack]:
    """Start the five services against a private database and bus prefix; tear all down."""
    run_id = f"{os.getpid()}_{uuid.uuid4().hex[:6]}"
    base_db = os.environ.get(
        "DOCPIPE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    ).rsplit("/", 1)[0]
    blob_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"docpipe_bench_{run_id}" / "blobs"
    settings = Settings(
        database_url=f"{base_db}/docpipe_bench_{run_id}",
        amqp_url=os.environ.get("DOCPIPE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        bus_prefix=f"docpipe_bench_{run_id}",
        blob_dir=blob_dir,
        api_keys=",".join(f"{k}={t}" for k, t in {API_KEY: TENANT, **FAIR_KEYS}.items()),
        admin_keys="bench-admin",
        # The stack's ladder too: teardown deletes the retry queues these delays name.
        retry_delays_ms=[200, 500, 1000],
    )
    env = {
        # The services connect as the runtime role; the stack migrates and grants with the
        # privileged URL that created the database (docs/decisions/0980).
        "DOCPIPE_DATABASE_URL": with_role(settings.database_url, *DEV_RUNTIME_ROLE),
        "DOCPIPE_MIGRATE_DATABASE_URL": settings.database_url,
        "DOCPIPE_AMQP_URL": settings.amqp_url,
        "DOCPIPE_BUS_PREFIX": settings.bus_prefix,
        "DOCPIPE_BLOB_DIR": str(blob_dir),
        "DOCPIPE_API_KEYS": settings.api_keys,
        "DOCPIPE_ADMIN_KEYS": settings.admin_keys,
        "DOCPIPE_RETRY_DELAYS_MS": json.dumps(settings.retry_delays_ms),
        "DOCPIPE_LOG_LEVEL": os.environ.get("DOCPIPE_BENCH_LOG_LEVEL", "WARNING"),
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    env.update(stack_ports())
    pool = await create_pool(settings.database_url, max_size=8)  # creates and migrates
    stack = Stack(env, log_dir=log_dir)
    await stack.start()
    try:
        await stack.wait_ready(120)
        yield BenchStack(stack, settings, pool, env)
    finally:
        await stack.stop()
        await pool.close()
        await _drop(settings)


async def _drop(settings: Settings) -> None:
    from tests.conftest import delete_bus

    try:
        await delete_bus(settings)
    except Exception as exc:  # cleanup is best effort
        print(f"[bench] could not delete the bus topology: {exc}")
    try:
        await drop_database(settings.database_url)
    except Exception as exc:
        print(f"[bench] could not drop {settings.database_url}: {exc}")
    import shutil

    shutil.rmtree(Path(settings.blob_dir).parent, ignore_errors=True)


def target(name: str, value: float, goal: str, met: bool, **detail: Any) -> dict[str, Any]:
    return {"name": name, "value": round(value, 4), "target": goal, "met": bool(met), **detail}
