"""`docpipe keys`: add, list, rotate and revoke API keys in the database (shared/keys.py).

An operator's command: it talks to PostgreSQL directly (DOCPIPE_DATABASE_URL), so the first
key can be made before any service runs. Running services honour a change within their key
cache time (DOCPIPE_KEY_CACHE_SECONDS), with no restart. Every change is in the audit trail,
made by "cli:<user>@<host>". A new key is printed once: only its digest is kept.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
import typer
from rich.table import Table

from docpipe_cli.views import console, err_console, fail
from shared import keys as key_store
from shared.db import migrate
from shared.logging import configure_logging

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/docpipe"

keys_app = typer.Typer(
    name="keys",
    help="Add, list, rotate and revoke API keys (talks to the database directly).",
    no_args_is_help=True,
)

T = TypeVar("T")


def _actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


@keys_app.callback()
def keys_options(
    ctx: typer.Context,
    database_url: Annotated[
        str, typer.Option(envvar="DOCPIPE_DATABASE_URL", help="PostgreSQL URL of docpipe.")
    ] = DEFAULT_DATABASE_URL,
) -> None:
    ctx.obj = database_url
    # The audit lines are for the services' logs; here stdout carries the new key alone.
    configure_logging("docpipe-cli", "WARNING", json_output=False)


def _run(ctx: typer.Context, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            conn = await asyncpg.connect(ctx.obj)
        except (OSError, asyncpg.PostgresError) as exc:
            raise fail(f"Cannot reach the database: {exc}") from None
        try:
            await migrate(conn)
            return await action(conn)
        except key_store.KeyChangeRefused as exc:
            raise fail(str(exc)) from None
        finally:
            await conn.close()

    return asyncio.run(main())


def _print_new(key: str, stored: key_store.StoredKey) -> None:
    err_console.print(
        f"Key {stored.key_id} (tenant {stored.tenant or 'every tenant'}, scopes "
        f"{','.join(sorted(stored.scopes))}). It is shown once, now: store it safely."
    )
    typer.echo(key)


@keys_app.command("add")
def add(
    ctx: typer.Context,
    scope: Annotated[str, typer.Option(help="Comma list of scopes: submit, read, cancel, admin.")],
    tenant: Annotated[
        str | None,
        typer.Option(help="The key's tenant; an admin key without one covers every tenant."),
    ] = None,
    label: Annotated[str, typer.Option(help="A note to tell keys apart.")] = "",
) -> None:
    """Make a new key and print it (once)."""
    try:
        scopes = key_store.parse_scopes(scope)
    except key_store.KeyChangeRefused as exc:
        raise fail(str(exc)) from None
    key, stored = _run(
        ctx,
        lambda conn: key_store.add_key(
            conn, tenant=tenant, scopes=scopes, actor=_actor(), label=label
        ),
    )
    _print_new(key, stored)


@keys_app.command("list")
def list_(
    ctx: typer.Context,
    include_revoked: Annotated[bool, typer.Option("--all", help="Revoked keys too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """The keys (ids, tenants, scopes; never the keys themselves)."""
    rows = _run(ctx, lambda conn: key_store.list_keys(conn, include_revoked=include_revoked))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict()))
        return
    table = Table("id", "tenant", "scopes", "label", "created", "revoked")
    for row in rows:
        table.add_row(
            row.key_id,
            row.tenant or "(every tenant)",
            ",".join(sorted(row.scopes)),
            row.label,
            f"{row.created_at:%Y-%m-%d %H:%M}",
            f"{row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")]
) -> None:
    """Revoke a key: services refuse it within their key cache time."""
    stored = _run(ctx, lambda conn: key_store.revoke_key(conn, key_id, actor=_actor()))
    err_console.print(f"Revoked {stored.key_id}.")


@keys_app.command("rotate")
def rotate(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")]
) -> None:
    """Replace a key by a new one with the same tenant and scopes, and revoke the old one."""
    key, stored, old = _run(ctx, lambda conn: key_store.rotate_key(conn, key_id, actor=_actor()))
    err_console.print(f"Revoked {old.key_id}, replaced by {stored.key_id}.")
    _print_new(key, stored)
