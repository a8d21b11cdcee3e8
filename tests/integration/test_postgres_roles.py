"""PostgreSQL least privilege (issue 10, item 4; docs/decisions/0980): the owner role migrates,
the runtime role the services connect as has DML and nothing else, against the real server."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import (
    DEV_OWNER_ROLE,
    DEV_RUNTIME_ROLE,
    MigrationsPending,
    create_pool,
    drop_database,
    migration_files,
    prepare_database,
    with_role,
)
from shared.settings import Settings
from tests.conftest import unavailable
from tests.integration.stack_client import StackClient
from tests.stack_fixture import runtime_database_url

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RUNTIME, OWNER = DEV_RUNTIME_ROLE[0], DEV_OWNER_ROLE[0]
FULL_DML = {"SELECT", "INSERT", "UPDATE", "DELETE"}
# Where the runtime role gets less than full DML, and what it gets there.
NARROWER = {"schema_migrations": {"SELECT"}, "audit_log": {"SELECT", "INSERT"}}
NOT_GRANTED = ("TRUNCATE", "REFERENCES", "TRIGGER")


@pytest.fixture
async def runtime(runtime_pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the session's database as the runtime role, after the migrate step that
    a stack runs before its services start."""
    async with runtime_pool.acquire() as conn:
        yield conn


@pytest.fixture
async def scratch_url(test_settings: Settings) -> AsyncIterator[str]:
    """A database name of this test's own (the privileged URL; dropped afterwards)."""
    url = f"{test_settings.database_url}_roles_{uuid.uuid4().hex[:6]}"
    yield url
    await drop_database(url)


async def test_the_runtime_role_is_no_superuser_and_can_create_nothing(
    runtime: asyncpg.Connection,
) -> None:
    role = await runtime.fetchrow(
        "SELECT current_user AS name, rolsuper, rolcreatedb, rolcreaterole, rolreplication,"
        " rolbypassrls FROM pg_roles WHERE rolname = current_user"
    )
    assert role is not None and role["name"] == RUNTIME
    assert not any(role[k] for k in ("rolsuper", "rolcreatedb", "rolcreaterole")), dict(role)
    assert not role["rolreplication"] and not role["rolbypassrls"]
    assert not await runtime.fetchval("SELECT has_schema_privilege('public', 'CREATE')")
    # It owns nothing, so it can alter or drop nothing.
    assert (
        await runtime.fetchval(
            "SELECT count(*) FROM pg_class WHERE relowner = 'docpipe_app'::regrole"
        )
        == 0
    )
    refused = [
        "CREATE TABLE intruder (x int)",
        "CREATE TABLE public.intruder (x int)",
        "CREATE VIEW intruder AS SELECT 1",
        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "DROP TABLE jobs",
        "ALTER TABLE jobs ADD COLUMN intruder int",
        "CREATE INDEX intruder ON jobs (tenant)",
        "TRUNCATE jobs",
        "TRUNCATE audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change",
        "DELETE FROM audit_log",
        "UPDATE audit_log SET actor = 'someone else'",
        "INSERT INTO schema_migrations (name) VALUES ('999_intruder.sql')",
        "DELETE FROM schema_migrations",
        "CREATE DATABASE intruder",
        "CREATE ROLE intruder",
    ]
    for statement in refused:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await runtime.execute(statement)
            pytest.fail(f"the runtime role may: {statement}")
    # It holds no grant option: passing its rights on grants nothing (PostgreSQL warns).
    await runtime.execute("GRANT SELECT ON jobs TO PUBLIC")
    assert not await runtime.fetchval("SELECT has_table_privilege('public', 'jobs', 'SELECT')")


async def test_the_runtime_role_has_dml_on_every_table_and_nothing_more(
    runtime: asyncpg.Connection,
) -> None:
    tables = [
        r["relname"]
        for r in await runtime.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1"
        )
    ]
    assert {"jobs", "audit_log", "schema_migrations", "outbox", "api_keys"} <= set(tables)
    for table in tables:
        granted = {
            p
            for p in (*FULL_DML, *NOT_GRANTED)
            if await runtime.fetchval("SELECT has_table_privilege($1, $2)", table, p)
        }
        assert granted == NARROWER.get(table, FULL_DML), table
    sequences = [
        r["relname"]
        for r in await runtime.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'S'"
        )
    ]
    assert sequences, "the schema has serial columns"
    for sequence in sequences:
        assert await runtime.fetchval("SELECT has_sequence_privilege($1, 'USAGE')", sequence)
        assert not await runtime.fetchval("SELECT has_sequence_privilege($1, 'UPDATE')", sequence)
    # Appending to the audit trail (a bigserial) works; rolled back, the shared database keeps
    # no probe row.
    appending = runtime.transaction()
    await appending.start()
    try:
        row_id = await runtime.fetchval(
            "INSERT INTO audit_log (actor, action, target) VALUES ('test', 'probe', 'roles')"
            " RETURNING id"
        )
        assert row_id > 0
    finally:
        await appending.rollback()


async def test_the_owner_migrates_a_fresh_database_and_later_tables_reach_the_runtime_role(
    scratch_url: str,
) -> None:
    owner_url = with_role(scratch_url, *DEV_OWNER_ROLE)
    runtime_url = with_role(scratch_url, *DEV_RUNTIME_ROLE)
    applied = await prepare_database(owner_url, runtime_url)
    assert applied == [name for name, _ in migration_files()]
    assert await prepare_database(owner_url, runtime_url) == []  # idempotent
    owner = await asyncpg.connect(owner_url)
    try:
        assert not await owner.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
        owners = {
            r["owner"]
            for r in await owner.fetch(
                "SELECT pg_get_userbyid(c.relowner) AS owner FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            )
        }
        assert owners == {OWNER}
        # A table the owner makes by hand later is covered by the default privileges.
        await owner.execute("CREATE TABLE later_table (id bigserial PRIMARY KEY, note text)")
    finally:
        await owner.close()
    pool = await create_pool(runtime_url, max_size=2)  # a service's start-up: no DDL needed
    try:
        job_id = uuid.uuid4()
        await pool.execute(
            "INSERT INTO jobs (job_id, tenant, document_uri, filename)"
            " VALUES ($1, 'dev', 'blob://sha256/00', 'a.txt')",
            job_id,
        )
        await pool.execute("UPDATE jobs SET filename = 'b.txt' WHERE job_id = $1", job_id)
        await pool.execute("DELETE FROM jobs WHERE job_id = $1", job_id)
        await pool.execute("INSERT INTO later_table (note) VALUES ('reachable')")
        assert await pool.fetchval("SELECT note FROM later_table") == "reachable"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await pool.execute("DROP TABLE later_table")
    finally:
        await pool.close()


async def test_the_runtime_role_refuses_to_start_while_migrations_are_pending(
    scratch_url: str,
) -> None:
    with pytest.raises(MigrationsPending, match="does not exist and role docpipe_app may not"):
        await create_pool(with_role(scratch_url, *DEV_RUNTIME_ROLE), max_size=1)
    admin = await asyncpg.connect(scratch_url.rsplit("/", 1)[0] + "/postgres")
    try:
        name = scratch_url.rsplit("/", 1)[1]
        await admin.execute(f'CREATE DATABASE "{name}" OWNER {OWNER}')
    finally:
        await admin.close()
    with pytest.raises(MigrationsPending) as refused:
        await create_pool(with_role(scratch_url, *DEV_RUNTIME_ROLE), max_size=1)
    sentence = str(refused.value)
    assert RUNTIME in sentence and "DOCPIPE_MIGRATE_DATABASE_URL" in sentence
    assert migration_files()[0][0] in sentence
    # With the owner's URL the same call migrates, grants, and pools as the runtime role.
    pool = await create_pool(
        with_role(scratch_url, *DEV_RUNTIME_ROLE),
        migrate_url=with_role(scratch_url, *DEV_OWNER_ROLE),
        max_size=1,
    )
    try:
        assert await pool.fetchval("SELECT current_user") == RUNTIME
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") == len(
            migration_files()
        )
    finally:
        await pool.close()


async def test_the_roles_script_hands_a_database_from_before_the_split_to_the_owner(
    scratch_url: str,
) -> None:
    # A database the superuser created and migrated, as every one was before the roles.
    if shutil.which("psql") is None:
        unavailable("psql (postgresql-client) is not installed: scripts/postgres_roles.sh needs it")
    pool = await create_pool(scratch_url, max_size=1)
    await pool.close()
    owner_url = with_role(scratch_url, *DEV_OWNER_ROLE)
    runtime_url = with_role(scratch_url, *DEV_RUNTIME_ROLE)
    with pytest.raises(MigrationsPending, match="postgres_roles.sh"):
        await prepare_database(owner_url, runtime_url)  # the superuser's tables: not the owner's
    name = scratch_url.rsplit("/", 1)[1]
    script = await asyncio.create_subprocess_exec(
        "bash",
        str(ROOT / "scripts" / "postgres_roles.sh"),
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DOCPIPE_PG_ADMIN_URL": scratch_url.rsplit("/", 1)[0] + "/postgres",
            "DOCPIPE_PG_DATABASE": name,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(script.communicate(), 60)
    assert script.returncode == 0, output.decode()
    assert f"database {name} owned by {OWNER}" in output.decode()
    assert await prepare_database(owner_url, runtime_url) == []
    conn = await asyncpg.connect(runtime_url)
    try:
        assert await conn.fetchval("SELECT has_table_privilege('jobs', 'DELETE')")
        assert not await conn.fetchval("SELECT has_table_privilege('jobs', 'TRUNCATE')")
        owners = await conn.fetchval(
            "SELECT array_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        )
        assert owners == [OWNER]
    finally:
        await conn.close()


async def test_the_stack_services_connect_as_the_runtime_role(
    stack: StackClient, test_settings: Settings, db_pool: asyncpg.Pool
) -> None:
    env = stack.stack.env
    assert "DOCPIPE_MIGRATE_DATABASE_URL" not in env  # no service holds the owner's URL
    assert env["DOCPIPE_DATABASE_URL"] == runtime_database_url(test_settings)
    name = test_settings.database_url.rsplit("/", 1)[1]
    users = {
        r["usename"]: r["n"]
        for r in await db_pool.fetch(
            "SELECT usename, count(*) AS n FROM pg_stat_activity WHERE datname = $1"
            " GROUP BY usename",
            name,
        )
    }
    # ingest, progress, extractor, ocr and analyzer each hold a pool of at least one.
    assert users.get(RUNTIME, 0) >= 5, users
