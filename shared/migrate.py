"""The migrate step, on its own: `python -m shared.migrate`.

Runs as the schema owner (DOCPIPE_MIGRATE_DATABASE_URL, else DOCPIPE_DATABASE_URL): creates the
database if missing, applies pending migrations and grants the runtime role of
DOCPIPE_DATABASE_URL its DML rights. A deployment runs it once before the services, which then
need only the runtime credential (docs/decisions/0980)."""

from __future__ import annotations

import asyncio
import sys

from shared.db import MigrationsPending, prepare_database
from shared.settings import Settings


async def _main() -> int:
    settings = Settings()
    migrate_url = settings.migrate_database_url or settings.database_url
    try:
        applied = await prepare_database(migrate_url, settings.database_url)
    except MigrationsPending as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    print(f"migrations applied: {', '.join(applied) if applied else 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
