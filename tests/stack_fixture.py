"""The running stack for end-to-end tests: all five services as separate processes on free
ports, against the real RabbitMQ and PostgreSQL, with a private database and bus prefix.

One session-wide stack is shared by the integration and browser tests (registered in
tests/conftest.py); tests that need other settings start their own with stack_env()."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scripts.stack import Stack, stack_ports
from shared.db import DEV_RUNTIME_ROLE, with_role
from shared.settings import Settings
from tests.integration.stack_client import StackClient

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def runtime_database_url(settings: Settings) -> str:
    """The settings' database as the runtime role (DML only), which stack services use."""
    return with_role(settings.database_url, *DEV_RUNTIME_ROLE)


def stack_env(settings: Settings) -> dict[str, str]:
    """A stack on the settings' private world. The tests' privileged URL creates, migrates and
    grants (the stack does that before it starts a service); the services connect as the
    runtime role."""
    env = {
        "DOCPIPE_DATABASE_URL": runtime_database_url(settings),
        "DOCPIPE_MIGRATE_DATABASE_URL": settings.database_url,
        "DOCPIPE_AMQP_URL": settings.amqp_url,
        # PDF tables are off by default (their cost, docs/decisions/1040); the suite's stacks
        # turn them on so the end-to-end tests cover them.
        "DOCPIPE_PDF_TABLES": "true",
        "DOCPIPE_BUS_PREFIX": settings.bus_prefix,
        "DOCPIPE_BLOB_DIR": str(settings.blob_dir),
        "DOCPIPE_FILE_ROOTS": ",".join(str(root) for root in settings.file_roots),
        "DOCPIPE_API_KEYS": settings.api_keys,
        "DOCPIPE_ADMIN_KEYS": settings.admin_keys,
        "DOCPIPE_ENV": settings.env,
        "DOCPIPE_SECRET_KEYS": ",".join(k.get_secret_value() for k in settings.secret_keys),
        "DOCPIPE_RETRY_DELAYS_MS": "[200, 500, 1000]",
        "DOCPIPE_TENANT_INFLIGHT_DEFAULT": str(settings.tenant_inflight_default),
        "DOCPIPE_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        **stack_ports(),
    }
    return env


@pytest.fixture(scope="session")
async def stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[StackClient]:
    log_dir = ARTIFACTS / "logs" / test_settings.bus_prefix
    running = Stack(stack_env(test_settings), log_dir=log_dir)
    await running.start()
    try:
        await running.wait_ready(90)
        keys = test_settings.tenants_by_key
        key, other = list(keys)[:2]
        yield StackClient(
            running,
            key=key,
            other_key=other,
            admin_key=sorted(test_settings.admin_key_set)[0],
        )
    finally:
        await running.stop()
    print(f"stack logs: {log_dir}")


@asynccontextmanager
async def own_stack(
    base: Settings, suffix: str, overrides: dict[str, str], services: tuple[str, ...] | None = None
) -> AsyncIterator[StackClient]:
    """A stack on its own bus prefix (same database) with some settings overridden; its
    exchanges and queues are deleted at the end."""
    from tests.conftest import delete_bus  # tests.conftest imports this module

    settings = base.model_copy(update={"bus_prefix": f"{base.bus_prefix}_{suffix}"})
    kwargs: dict[str, Any] = {"services": services} if services else {}
    running = Stack(
        {**stack_env(settings), **overrides},
        log_dir=ARTIFACTS / "logs" / settings.bus_prefix,
        **kwargs,
    )
    await running.start()
    try:
        await running.wait_ready(90)
        key, other = list(settings.tenants_by_key)[:2]
        yield StackClient(running, key=key, other_key=other, admin_key="admin-key")
    finally:
        await running.stop()
        await delete_bus(settings)


async def refused_start(service: str, env: dict[str, Any]) -> str:
    """Start `python -m services.<service>` with `env` and expect it to refuse: asserts it
    exited non-zero within 90 s, and returns what it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"services.{service}",
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode not in (None, 0)
    return out.decode(errors="replace")


@asynccontextmanager
async def replicated_stacks(
    base: Settings,
    suffix: str,
    overrides: dict[str, str] | None = None,
    *,
    replica_services: tuple[str, ...] | None = None,
    replica_restart: bool = True,
) -> AsyncIterator[tuple[StackClient, StackClient]]:
    """Two sets of the five services (no model server) as processes, on one bus prefix of
    their own and the session's database: replicas, as a deployment scales them. The second
    set runs `replica_services` (default: all five); `replica_restart=False` leaves a killed
    replica dead. The bus is deleted at the end."""
    from scripts.stack import SERVICES
    from tests.conftest import delete_bus

    settings = base.model_copy(update={"bus_prefix": f"{base.bus_prefix}_{suffix}"})
    log_dir = ARTIFACTS / "logs" / settings.bus_prefix
    first = Stack({**stack_env(settings), **(overrides or {})}, services=SERVICES, log_dir=log_dir)
    second = first.replica(replica_services, log_dir=log_dir / "replica", restart=replica_restart)
    key, other = list(settings.tenants_by_key)[:2]
    admin = sorted(settings.admin_key_set)[0]
    try:
        await first.start()  # migrates and declares; then the replicas
        await second.start()
        # Ten processes starting at once on a shared 2-core machine: a generous bound.
        await asyncio.gather(first.wait_ready(300), second.wait_ready(300))
        yield (
            StackClient(first, key=key, other_key=other, admin_key=admin),
            StackClient(second, key=key, other_key=other, admin_key=admin),
        )
    finally:
        await asyncio.gather(first.stop(), second.stop())
        await delete_bus(settings)
        print(f"stack logs: {log_dir}")
