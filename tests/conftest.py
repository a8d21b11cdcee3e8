"""Shared fixtures. Integration fixtures use the real RabbitMQ and PostgreSQL named by the
environment; when one is missing they skip, except under CI=true where they fail the run."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from services.ocr.tesseract import engine_pool
from shared.sandbox import WarmPool
from shared.settings import Settings

IN_CI = os.environ.get("CI", "").lower() == "true"
# The tests run against development settings (the development keys, ?token= on WebSockets);
# tests of what holds outside dev start their services with DOCPIPE_ENV=production.
os.environ.setdefault("DOCPIPE_ENV", "dev")
ROOT = Path(__file__).resolve().parent.parent


def unavailable(what: str) -> None:
    """Skip with the reason; under CI=true a missing service or corpus fails instead."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: required, not skipped)")
    pytest.skip(what)


def base_database_url() -> str:
    return os.environ.get(
        "DOCPIPE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def amqp_url() -> str:
    return os.environ.get("DOCPIPE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def corpus_dir() -> Path:
    return Path(os.environ.get("DOCPIPE_CORPUS", str(ROOT.parent / "shared" / "corpus"))).resolve()


@pytest.fixture(autouse=True)
def _restore_pillow_pixel_limit() -> object:
    """Extraction code sets Pillow's global pixel limit (in its child process in production);
    tests that call it in-process must not leak the setting into other tests."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = saved


@pytest.fixture(scope="session")
def corpus() -> Path:
    path = corpus_dir()
    if not (path / "MANIFEST.tsv").exists():
        unavailable(f"corpus not found at {path} (set DOCPIPE_CORPUS)")
    return path


@pytest.fixture(scope="session")
def run_id() -> str:
    return f"{os.getpid()}_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def test_settings(run_id: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for a private world: its own database, bus prefix and blob directory."""
    base = base_database_url().rsplit("/", 1)[0]
    return Settings(
        database_url=f"{base}/docpipe_test_{run_id}",
        amqp_url=amqp_url(),
        bus_prefix=f"docpipe_test_{run_id}",
        blob_dir=tmp_path_factory.mktemp("blobs"),
        file_roots=[tmp_path_factory.getbasetemp()],  # tests publish file:// of tmp_path files
        retry_delays_ms=[200, 500, 1000],
        log_json=True,
        # A key of the session's own, not the development key: the stacks get it through
        # stack_env, so a password is sealed and opened with what the settings configure.
        secret_keys=[SecretStr(Fernet.generate_key().decode())],
        # Tests share one database, and many leave jobs unfinished (ingest alone, no
        # extractor): with the default in-flight limit a tenant's later jobs would be held.
        # The fair-share tests set their own limits on tenants of their own.
        tenant_inflight_default=1_000_000,
    )


@pytest.fixture(scope="session")
async def ocr_engine() -> AsyncIterator[WarmPool]:
    """The OCR service's tesseract children, with the default limits (a test's settings may
    tighten the time or CPU allowance; a job that fits goes to these children)."""
    engine = engine_pool(Settings())
    engine.fill()
    yield engine
    await engine.close()


async def _can_connect_pg(url: str) -> str | None:
    try:
        conn = await asyncio.wait_for(asyncpg.connect(url), 5)
    except Exception as exc:  # any failure means unavailable
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


async def _missing_roles(url: str) -> list[str]:
    from shared.db import DEV_OWNER_ROLE, DEV_RUNTIME_ROLE

    wanted = [DEV_OWNER_ROLE[0], DEV_RUNTIME_ROLE[0]]
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname = ANY($1)", wanted)
    finally:
        await conn.close()
    return sorted(set(wanted) - {r["rolname"] for r in rows})


@pytest.fixture(scope="session")
async def db_pool(test_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """A migrated pool on a fresh database, dropped at the end of the session. It connects
    with the tests' privileged URL (tests inspect and alter rows freely); stack services
    connect as the runtime role (tests/stack_fixture.py)."""
    from shared.db import create_pool, drop_database

    problem = await _can_connect_pg(base_database_url())
    if problem:
        unavailable(f"PostgreSQL unreachable at {base_database_url()}: {problem}")
    missing = await _missing_roles(base_database_url())
    if missing:
        unavailable(
            f"PostgreSQL role(s) {', '.join(missing)} missing: the stacks' services connect as "
            "the runtime role (run scripts/postgres_roles.sh, or make services)"
        )
    pool = await create_pool(test_settings.database_url, max_size=8)
    yield pool
    await pool.close()
    await drop_database(test_settings.database_url)


@pytest.fixture(scope="session")
async def runtime_pool(
    test_settings: Settings, db_pool: asyncpg.Pool
) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the session's database as the runtime role the stack's services use, for
    tests that run a service's own work (a sweep, a purge) directly."""
    from shared.db import create_pool, prepare_database
    from tests.stack_fixture import runtime_database_url

    runtime_url = runtime_database_url(test_settings)
    await prepare_database(test_settings.database_url, runtime_url)
    pool = await create_pool(runtime_url, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def rabbit_available(test_settings: Settings) -> AsyncIterator[None]:
    """RabbitMQ is reachable; at the end the session's private exchanges and queues go."""
    import aio_pika

    try:
        conn = await asyncio.wait_for(aio_pika.connect(amqp_url()), 5)
    except Exception as exc:
        unavailable(f"RabbitMQ unreachable at {amqp_url()}: {type(exc).__name__}: {exc}")
        return
    await conn.close()
    yield
    await delete_bus(test_settings)


async def delete_bus(settings: Settings) -> None:
    """Remove a prefix's exchanges and queues (the topology's, whatever declared them)."""
    import aio_pika

    from shared.topology import Topology

    topo = Topology.from_settings(settings)
    conn = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await conn.channel()
        for name in topo.all_queue_names():
            try:
                await channel.queue_delete(name)
            except Exception:  # already gone; that closes the channel
                channel = await conn.channel()
        for name in (topo.exchange_name, topo.dlx_name, topo.live_exchange_name):
            try:
                await channel.exchange_delete(name)
            except Exception:
                channel = await conn.channel()
    finally:
        await conn.close()


# The session-wide stack (all five services as processes), shared by every test directory.
from tests.stack_fixture import stack  # noqa: E402, F401
