"""Remove what killed or interrupted test and benchmark runs left behind: their private
databases and their exchanges and queues (names carry the run's pid; live runs are kept).

Best effort: `make test` runs it first so stale state never piles up on a long-lived machine."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess

import aio_pika
import asyncpg

PREFIX = re.compile(r"^(docpipe_(?:test|bench)_(\d+)_[0-9a-f]+)")
ADMIN_DB = os.environ.get(
    "DOCPIPE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AMQP = os.environ.get("DOCPIPE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def stale(name: str) -> bool:
    match = PREFIX.match(name)
    if not match:
        return False
    pid = int(match.group(2))
    return not os.path.exists(f"/proc/{pid}")


def rabbit_names(kind: str) -> list[str]:
    if not shutil.which("rabbitmqctl"):
        return []
    out = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{kind}", "name"], capture_output=True, text=True, timeout=60
    )
    return [line.strip() for line in out.stdout.splitlines()[1:] if line.strip()]


async def main() -> None:
    try:
        conn = await asyncpg.connect(ADMIN_DB, timeout=5)
        try:
            names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
            for name in filter(stale, names):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                print(f"dropped database {name}")
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"database clean-up skipped: {exc}")
    queues = [q for q in rabbit_names("queues") if stale(q)]
    exchanges = [e for e in rabbit_names("exchanges") if stale(e)]
    if not queues and not exchanges:
        return
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        for queue in queues:
            try:
                await channel.queue_delete(queue)
            except Exception:  # gone meanwhile; the channel closes on error
                channel = await connection.channel()
        for exchange in exchanges:
            try:
                await channel.exchange_delete(exchange)
            except Exception:
                channel = await connection.channel()
    finally:
        await connection.close()
    print(f"deleted {len(queues)} stale queues and {len(exchanges)} stale exchanges")


if __name__ == "__main__":
    asyncio.run(main())
