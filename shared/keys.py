"""API keys kept in the database (table api_keys, migration 014): added, listed, rotated and
revoked at run time by `docpipe keys`, with no restart.

A key is `dpk_<key id>_<secret>`: the id names it in listings and in the audit trail, the secret
is 256 random bits. Only the key's SHA-256 is stored; a lookup hashes what the caller sent and
finds the row by that digest. Scopes say what a key may do (Scope); a key without the admin
scope belongs to one tenant, and an admin key may be limited to one tenant too.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

import asyncpg

from shared import audit
from shared.bounds import TENANT_MAX

KEY_PREFIX = "dpk_"
# Longer than any key this module makes; longer input is not looked up at all.
KEY_MAX_CHARS = 256
LABEL_MAX_CHARS = 200


class Scope(StrEnum):
    SUBMIT = "submit"
    READ = "read"
    CANCEL = "cancel"
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


Db: TypeAlias = asyncpg.Pool | asyncpg.Connection


@asynccontextmanager
async def _transaction(db: Db) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn, conn.transaction():
            yield conn
    else:
        async with db.transaction():
            yield db


class KeyChangeRefused(ValueError):
    """A key change that cannot be made, with the sentence that says why."""


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """'submit,read' (or a list of names) as scopes; ValueError naming an unknown one."""
    names = text.split(",") if isinstance(text, str) else list(text)
    scopes: set[Scope] = set()
    for name in (n.strip().lower() for n in names):
        if not name:
            continue
        try:
            scopes.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise KeyChangeRefused(
                f"Unknown scope {name[:40]!r}: the scopes are {known}."
            ) from None
    if not scopes:
        raise KeyChangeRefused("Name at least one scope.")
    return frozenset(scopes)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def fingerprint(key: str) -> str:
    """A short, stable name for a key from the settings (which has no id): never the key."""
    return "settings:" + key_digest(key).hex()[:10]


def new_key() -> tuple[str, str]:
    """(key id, key) of a fresh key."""
    key_id = "k" + secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class StoredKey:
    key_id: str
    tenant: str | None
    scopes: frozenset[Scope]
    label: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    rotated_to: str | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "scopes": sorted(self.scopes),
            "label": self.label,
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "rotated_to": self.rotated_to,
        }


_COLUMNS = "key_id, tenant, scopes, label, created_at, created_by, revoked_at, rotated_to"


def _stored(row: asyncpg.Record) -> StoredKey:
    return StoredKey(
        key_id=row["key_id"],
        tenant=row["tenant"],
        scopes=frozenset(Scope(s) for s in row["scopes"]),
        label=row["label"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        revoked_at=row["revoked_at"],
        rotated_to=row["rotated_to"],
    )


def _check_new_key(tenant: str | None, scopes: frozenset[Scope], label: str) -> None:
    if tenant is not None and not 0 < len(tenant) <= TENANT_MAX:
        raise KeyChangeRefused(f"A tenant name has 1 to {TENANT_MAX} characters.")
    if tenant is None and Scope.ADMIN not in scopes:
        raise KeyChangeRefused("A key without the admin scope belongs to a tenant: pass --tenant.")
    if len(label) > LABEL_MAX_CHARS:
        raise KeyChangeRefused(f"A label has at most {LABEL_MAX_CHARS} characters.")


async def _insert(
    conn: asyncpg.Connection,
    tenant: str | None,
    scopes: frozenset[Scope],
    label: str,
    actor: str,
) -> tuple[str, StoredKey]:
    key_id, key = new_key()
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (key_id, key_sha256, tenant, scopes, label, created_by)"
        f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
        key_id,
        key_digest(key),
        tenant,
        sorted(scopes),
        label,
        actor,
    )
    assert row is not None
    return key, _stored(row)


async def add_key(
    db: Db,
    *,
    tenant: str | None,
    scopes: frozenset[Scope],
    actor: str,
    label: str = "",
) -> tuple[str, StoredKey]:
    """A new key (returned once, in clear: only its digest is kept) and its row, audited."""
    _check_new_key(tenant, scopes, label)
    async with _transaction(db) as conn:
        key, stored = await _insert(conn, tenant, scopes, label, actor)
        await audit.record(
            conn,
            actor=actor,
            action=audit.Action.KEY_ADD,
            target=stored.key_id,
            tenant=tenant,
            detail={"scopes": [scope.value for scope in sorted(scopes)], "label": label},
        )
    return key, stored


async def list_keys(conn: Db, *, include_revoked: bool = False) -> list[StoredKey]:
    where = "" if include_revoked else " WHERE revoked_at IS NULL"
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, key_id")
    return [_stored(r) for r in rows]


async def get_key(conn: Db, key_id: str) -> StoredKey | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1", key_id)
    return None if row is None else _stored(row)


async def revoke_key(db: Db, key_id: str, *, actor: str) -> StoredKey:
    """Revoke a key at once (processes stop honouring it within their cache time)."""
    async with _transaction(db) as conn:
        row = await conn.fetchrow(
            f"UPDATE api_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL"
            f" RETURNING {_COLUMNS}",
            key_id,
        )
        if row is None:
            raise KeyChangeRefused(await _why_not_active(conn, key_id))
        stored = _stored(row)
        await audit.record(
            conn,
            actor=actor,
            action=audit.Action.KEY_REVOKE,
            target=key_id,
            tenant=stored.tenant,
        )
    return stored


async def rotate_key(db: Db, key_id: str, *, actor: str) -> tuple[str, StoredKey, StoredKey]:
    """Replace a key by a new one with the same tenant, scopes and label, and revoke the old
    one: (the new key, its row, the old row)."""
    async with _transaction(db) as conn:
        old = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL FOR UPDATE",
            key_id,
        )
        if old is None:
            raise KeyChangeRefused(await _why_not_active(conn, key_id))
        previous = _stored(old)
        key, stored = await _insert(conn, previous.tenant, previous.scopes, previous.label, actor)
        revoked = await conn.fetchrow(
            f"UPDATE api_keys SET revoked_at = now(), rotated_to = $2 WHERE key_id = $1"
            f" RETURNING {_COLUMNS}",
            key_id,
            stored.key_id,
        )
        assert revoked is not None
        await audit.record(
            conn,
            actor=actor,
            action=audit.Action.KEY_ROTATE,
            target=key_id,
            tenant=previous.tenant,
            detail={"new_key_id": stored.key_id},
        )
    return key, stored, _stored(revoked)


async def _why_not_active(conn: Db, key_id: str) -> str:
    existing = await get_key(conn, key_id)
    if existing is None:
        return f"No key with id {key_id[:40]!r}."
    return f"The key {key_id} was revoked at {existing.revoked_at:%Y-%m-%d %H:%M:%S %Z}."


async def find_active(conn: Db, digest: bytes) -> StoredKey | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL", digest
    )
    return None if row is None else _stored(row)


async def any_active(conn: Db) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)")
    )
