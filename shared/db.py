"""PostgreSQL access: one asyncpg pool per process, and migrations applied at start-up.

Migrations are plain SQL files applied in name order inside one transaction each, under a
transaction-scoped advisory lock, so any number of processes may start at once and re-run them.

Two roles (docs/decisions/0980): the owner (DOCPIPE_MIGRATE_DATABASE_URL) owns the schema and
runs the migrations; the runtime role (DOCPIPE_DATABASE_URL) gets DML on the tables and nothing
else. The migrate step grants it what it needs each time it runs. A runtime role that finds
nothing pending starts without any DDL; one that finds migrations pending refuses to start and
says who must apply them.
"""

from __future__ import annotations

import contextlib
import json
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Arbitrary constant shared by every docpipe process: "docpipe migrations".
MIGRATION_LOCK_KEY = 0x646F6370

# The development roles scripts/postgres_roles.sh creates, with their development passwords
# (a trust-authenticated local cluster ignores them; the compose cluster checks them).
# Production names its own roles and passwords in the two URLs, from secrets.
DEV_OWNER_ROLE = ("docpipe_owner", "docpipe-owner-dev")
DEV_RUNTIME_ROLE = ("docpipe_app", "docpipe-app-dev")

# What the runtime role may do on every table of the schema. Not TRUNCATE (nothing at run time
# empties a table, and TRUNCATE skips row triggers), REFERENCES or TRIGGER.
RUNTIME_TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"
# Tables where the runtime role gets less: it reads the migrations' bookkeeping, and only
# appends to the audit trail (its trigger refuses changes too; the missing grant means a
# runtime role cannot even try).
RUNTIME_REVOKED = {
    "schema_migrations": "INSERT, UPDATE, DELETE",
    "audit_log": "UPDATE, DELETE",
}


# The connection setting that names the writing process's bus (see create_pool).
BUS_PREFIX_SETTING = "docpipe.bus_prefix"


class MigrationsPending(RuntimeError):
    """Migrations are pending and the connected role may not apply them."""


def with_role(database_url: str, role: str, password: str | None = None) -> str:
    """The same database URL, connecting as `role` (with `password`, if given)."""
    parts = urlsplit(database_url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = quote(role, safe="")
    if password is not None:
        user = f"{user}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns round-trip as Python objects.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def ensure_database(database_url: str) -> None:
    """Create the database named in the URL if it does not exist yet (dev and test convenience)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        return
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    conn = await asyncpg.connect(admin_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Another process may win the race to create it.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                try:
                    await conn.execute(f'CREATE DATABASE "{name}"')
                except asyncpg.InsufficientPrivilegeError as exc:
                    raise MigrationsPending(
                        f"database {name} does not exist and role {_connected_role(conn)} may "
                        f"not create it ({exc}): create it for the schema owner "
                        "(scripts/postgres_roles.sh), or set DOCPIPE_MIGRATE_DATABASE_URL"
                    ) from exc
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    """Drop the database named in the URL, closing its connections (test and benchmark runs)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    conn = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def migration_files() -> list[tuple[str, str]]:
    """(file name, SQL) of every migration, in the order of their names."""
    folder = resources.files("shared") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text()) for p in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied by this call.

    With nothing pending it runs no DDL, so a runtime role without DDL rights may call it; a
    role that may not apply what is pending gets MigrationsPending."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        done: set[str] = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is not None:
            done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        pending = [(name, sql) for name, sql in migration_files() if name not in done]
        if not pending:
            return []
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for name, sql in pending:
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                applied_now.append(name)
        except asyncpg.InsufficientPrivilegeError as exc:
            role = _connected_role(conn)
            raise MigrationsPending(
                f"{len(pending)} migration(s) pending ({', '.join(n for n, _ in pending)}) and "
                f"role {role} may not apply them ({exc}): run them as the schema owner, with "
                "DOCPIPE_MIGRATE_DATABASE_URL set or `python -m shared.migrate`"
            ) from exc
    log.info("migrations applied", migrations=applied_now)
    return applied_now


def _connected_role(conn: asyncpg.Connection) -> str:
    """The role a connection authenticated as, as the server reported it (a connection whose
    transaction has failed answers no query until it is rolled back)."""
    return str(getattr(conn.get_settings(), "session_authorization", None) or "?")


async def grant_runtime_role(conn: asyncpg.Connection, role: str) -> None:
    """Give the runtime role DML on every table and sequence of the schema (now, and by
    default for what the connected role creates later), and nothing more. Idempotent."""
    ident = await conn.fetchval("SELECT quote_ident($1)", role)
    async with conn.transaction():
        # The same lock as migrate: no migration is halfway while the grants are computed.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        # Before PostgreSQL 15 every role could create objects in public.
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {ident}")
        await conn.execute(
            f"GRANT {RUNTIME_TABLE_PRIVILEGES} ON ALL TABLES IN SCHEMA public TO {ident}"
        )
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {ident}")
        await conn.execute(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
            f"GRANT {RUNTIME_TABLE_PRIVILEGES} ON TABLES TO {ident}"
        )
        await conn.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {ident}"
        )
        for table, privileges in RUNTIME_REVOKED.items():
            if await conn.fetchval("SELECT to_regclass($1)", table) is not None:
                await conn.execute(f"REVOKE {privileges} ON {table} FROM {ident}")


async def _role_of(database_url: str) -> str:
    """The role a URL connects as (libpq's defaults and PGUSER included)."""
    conn = await asyncpg.connect(database_url)
    try:
        return str(await conn.fetchval("SELECT current_user"))
    finally:
        await conn.close()


async def prepare_database(migrate_url: str, runtime_url: str | None = None) -> list[str]:
    """The migrate step: create the database if missing, apply pending migrations as the role
    of `migrate_url`, and grant the role of `runtime_url` (when another one) its DML rights.
    Returns the migrations applied."""
    await ensure_database(migrate_url)
    conn = await asyncpg.connect(migrate_url)
    try:
        applied = await migrate(conn)
        if runtime_url is not None and runtime_url != migrate_url:
            runtime_role = await _role_of(runtime_url)
            if runtime_role != await conn.fetchval("SELECT current_user"):
                await grant_runtime_role(conn, runtime_role)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise MigrationsPending(
            f"role {_connected_role(conn)} may not read or grant the schema of "
            f"{urlsplit(migrate_url).path.lstrip('/')} ({exc}): migrate and grant as the schema "
            "owner (DOCPIPE_MIGRATE_DATABASE_URL, or python -m shared.migrate); a database made "
            "before the roles is handed to the owner by scripts/postgres_roles.sh"
        ) from exc
    finally:
        await conn.close()
    return applied


async def create_pool(
    database_url: str,
    *,
    migrate_url: str | None = None,
    min_size: int = 1,
    max_size: int = 10,
    bus_prefix: str | None = None,
) -> asyncpg.Pool:
    """Migrate (as `migrate_url`'s role, by default `database_url`'s) and return a pool on
    `database_url`. The database is created if missing. `bus_prefix`: the bus this process
    publishes on, carried by every connection as docpipe.bus_prefix (the outbox rows it
    writes are its bus's; migration 018)."""
    await prepare_database(migrate_url or database_url, database_url)
    server_settings = {BUS_PREFIX_SETTING: bus_prefix} if bus_prefix else None
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool


def as_json(value: Any) -> str:
    return json.dumps(value, default=str)
