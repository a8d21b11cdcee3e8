"""Fixtures of the crash tests: a private stack per test (own database, bus prefix, blob
directory and retry ladder), direct views of the broker and the database, and helpers that
restart RabbitMQ or PostgreSQL and always bring them back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from scripts.stack import Stack
from shared.db import drop_database
from shared.events import TERMINAL_STATUSES
from shared.settings import Settings
from shared.topology import Topology
from tests.conftest import _can_connect_pg, base_database_url, delete_bus, unavailable
from tests.integration.conftest import ARTIFACTS, stack_env
from tests.integration.stack_client import StackClient

SHORT_RETRIES_MS = (200, 400, 800)
PG_CLUSTER = ("15", "main")


@dataclass
class ReliabilityStack:
    """One private stack and the means to look behind it."""

    name: str
    settings: Settings
    stack: Stack
    client: StackClient
    started: float = field(default_factory=time.monotonic)

    @property
    def topology(self) -> Topology:
        return Topology.from_settings(self.settings)

    async def job_statuses(self, job_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """job_id -> (status, error), straight from the database."""
        conn = await asyncpg.connect(self.settings.database_url, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT job_id::text AS id, status, error FROM jobs WHERE job_id = ANY($1::uuid[])",
                list(job_ids),
            )
        finally:
            await conn.close()
        return {r["id"]: (r["status"], r["error"]) for r in rows}

    async def wait_all(
        self, job_ids: list[str], timeout: float = 180.0, poll: float = 0.5
    ) -> dict[str, tuple[str, str | None]]:
        """Wait until every job is terminal; tolerates a database that is briefly away."""
        deadline = time.monotonic() + timeout
        statuses: dict[str, tuple[str, str | None]] = {}
        while True:
            with contextlib.suppress(OSError, asyncpg.PostgresError, TimeoutError):
                statuses = await self.job_statuses(job_ids)
            pending = [
                j for j in job_ids if statuses.get(j, ("?", None))[0] not in TERMINAL_STATUSES
            ]
            if not pending:
                return statuses
            if time.monotonic() > deadline:
                stuck = Counter(statuses.get(j, ("missing", None))[0] for j in pending)
                raise TimeoutError(f"{len(pending)} jobs not terminal after {timeout:g} s: {stuck}")
            await asyncio.sleep(poll)

    async def progress(self, job_id: str) -> dict[str, Any] | None:
        async with httpx.AsyncClient(timeout=5) as http:
            response = await http.get(
                f"{self.stack.url('progress')}/v1/jobs/{job_id}/progress",
                headers=self.client.headers(),
            )
        return response.json() if response.status_code == 200 else None

    async def readiness(self) -> dict[str, dict[str, Any]]:
        """Each service's /readyz body (or the error that stood in its way)."""
        out: dict[str, dict[str, Any]] = {}
        async with httpx.AsyncClient(timeout=6) as http:
            for name in self.stack.services:
                try:
                    out[name] = (await http.get(f"{self.stack.url(name)}/readyz")).json()
                except (httpx.HTTPError, ValueError) as exc:
                    out[name] = {"ready": False, "error": repr(exc)}
        return out

    async def metrics(self) -> dict[str, Counter[tuple[str, str]]]:
        """service -> Counter of docpipe_messages_total by (queue, outcome)."""
        out: dict[str, Counter[tuple[str, str]]] = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for name in self.stack.services:
                text = (await http.get(f"{self.stack.url(name)}/metrics")).text
                out[name] = parse_message_counts(text)
        return out

    async def queue_depths(self) -> dict[str, int]:
        """Ready messages in every queue of the topology (work, retry and dead-letter)."""
        depths: dict[str, int] = {}
        conn = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await conn.channel()
            for name in self.topology.all_queue_names():
                queue = await channel.declare_queue(name, passive=True)
                depths[name] = int(queue.declaration_result.message_count or 0)
        finally:
            await conn.close()
        return depths


_SAMPLE = re.compile(r"^docpipe_messages_total\{([^}]*)\}\s+([0-9.eE+-]+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def parse_message_counts(text: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for labels, value in _SAMPLE.findall(text):
        kv = dict(_LABEL.findall(labels))
        counts[(kv.get("queue", ""), kv.get("outcome", ""))] += int(float(value))
    return counts


def comparable_result(result: dict[str, Any]) -> dict[str, Any]:
    """A result without what depends on the job's id or on the clock."""
    return {
        "status": result["status"],
        "format": result["format"],
        "pages_total": result["pages_total"],
        "text": result["text"],
        "pages": result["pages"],
        "chunks": [{k: v for k, v in c.items() if k != "chunk_id"} for c in result["chunks"]],
        "failed_pages": result["failed_pages"],
        "partial": result["partial"],
    }


StackFactory = Callable[..., Any]


@pytest.fixture
async def private_stack(
    test_settings: Settings, rabbit_available: None, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    """A factory: `async with private_stack("name", retry_delays_ms=...) as rs:` runs the five
    services as processes on a world of their own, torn down (bus and database) on exit."""
    problem = await _can_connect_pg(base_database_url())
    if problem:
        unavailable(f"PostgreSQL unreachable at {base_database_url()}: {problem}")

    @asynccontextmanager
    async def factory(
        name: str,
        *,
        retry_delays_ms: Iterable[int] = SHORT_RETRIES_MS,
        env: dict[str, str] | None = None,
    ) -> AsyncIterator[ReliabilityStack]:
        base = test_settings.database_url.rsplit("/", 1)[0]
        dbname = test_settings.database_url.rsplit("/", 1)[1]
        settings = test_settings.model_copy(
            update={
                "database_url": f"{base}/{dbname}_{name}",
                "bus_prefix": f"{test_settings.bus_prefix}_{name}",
                "blob_dir": tmp_path / f"blobs_{name}",
                "retry_delays_ms": list(retry_delays_ms),
            }
        )
        settings.blob_dir.mkdir(parents=True, exist_ok=True)
        stack_vars = stack_env(settings)
        stack_vars["DOCPIPE_RETRY_DELAYS_MS"] = json.dumps(list(retry_delays_ms))
        stack_vars.update(env or {})
        log_dir = ARTIFACTS / "logs" / settings.bus_prefix
        running = Stack(stack_vars, log_dir=log_dir)
        keys = list(settings.tenants_by_key)
        client = StackClient(
            running, key=keys[0], other_key=keys[1], admin_key=sorted(settings.admin_key_set)[0]
        )
        await running.start()
        try:
            await running.wait_ready(90)
            yield ReliabilityStack(name, settings, running, client)
        finally:
            await running.stop()
            print(f"stack logs: {log_dir}")
            with contextlib.suppress(Exception):
                await delete_bus(settings)
            with contextlib.suppress(Exception):
                await drop_database(settings.database_url)

    yield factory


# --- infrastructure restarts ------------------------------------------------------------------


async def run(*argv: str, timeout: float = 60.0) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {text[-500:]}")
    return text


async def rabbit_up(url: str) -> bool:
    try:
        conn = await asyncio.wait_for(aio_pika.connect(url), 5)
    except Exception:  # any failure means down
        return False
    await conn.close()
    return True


async def postgres_up() -> bool:
    return await _can_connect_pg(base_database_url()) is None


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what} not back after {timeout:g} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


@asynccontextmanager
async def rabbitmq_stopped(amqp_url: str) -> AsyncIterator[None]:
    """RabbitMQ's app is stopped inside the block, and started again however it is left."""
    await run("rabbitmqctl", "-q", "stop_app")
    try:
        yield
    finally:
        await run("rabbitmqctl", "-q", "start_app")
        await wait_for(lambda: rabbit_up(amqp_url), 60, "RabbitMQ")


@asynccontextmanager
async def postgres_stopped() -> AsyncIterator[None]:
    """PostgreSQL is stopped inside the block, and started again however it is left."""
    await run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "stop", "-m", "fast")
    try:
        yield
    finally:
        with contextlib.suppress(RuntimeError):  # "already running" when stop half-failed
            await run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start")
        await wait_for(postgres_up, 60, "PostgreSQL")


@pytest.fixture
async def infrastructure_guard(test_settings: Settings) -> AsyncIterator[None]:
    """For tests that restart a server: afterwards, both must answer again."""
    yield
    rabbit_ok = await rabbit_up(test_settings.amqp_url)
    if not rabbit_ok:  # last resort: a test that failed half-way must not leave it down
        with contextlib.suppress(Exception):
            await run("rabbitmqctl", "-q", "start_app")
        rabbit_ok = await rabbit_up(test_settings.amqp_url)
    pg_ok = await postgres_up()
    if not pg_ok:
        with contextlib.suppress(Exception):
            await run("pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "start")
        pg_ok = await postgres_up()
    assert rabbit_ok and pg_ok, f"infrastructure left down: rabbitmq={rabbit_ok} postgres={pg_ok}"
