"""Per-page costs for capacity planning (docs/capacity.md is derived from them).

Two workloads go through the running stack one after the other, each on its own counters:
the corpus text PDFs with the default options, and the scanned pages (OCR). For each it
reports, per page processed:
- CPU seconds per service, its sandboxed children included (psutil: the process tree's own
  times plus what its reaped children used);
- messages and bytes on the bus: a tap queue bound with `#` to the topic exchange sees every
  event published (retries, which go through the default exchange, are not on it);
- rows written and bytes in PostgreSQL: rows inserted or updated by the private database's
  tables (pg_stat_user_tables), the database's growth, and the WAL the server wrote meanwhile;
- blob bytes: the bytes of the documents uploaded. The store is content-addressed, so the
  folder does not grow for a document an earlier benchmark uploaded, and the page images it
  renders for OCR are removed after their OCR (DOCPIPE_IMAGE_KEEP_SECONDS): what it keeps is
  the uploads.

The figures are medians of nothing: one pass over the corpus, so they are as noisy as the
machine; they size a deployment, they are not a target.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import psutil

from benchmarks.common import BenchStack, corpus_files, http_client
from shared.topology import Topology

SERVICES = ("ingest", "extractor", "ocr", "analyzer", "progress")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process, its live descendants, and the children it has reaped."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = child.cpu_times()
                total += ct.user + ct.system
        return total
    except psutil.Error:
        return 0.0


@dataclass
class BusTap:
    """Counts what is published on the topic exchange, by routing key."""

    messages: int = 0
    body_bytes: int = 0
    by_key: dict[str, int] = field(default_factory=dict)

    def see(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        self.messages += 1
        self.body_bytes += len(message.body)
        key = message.routing_key or ""
        self.by_key[key] = self.by_key.get(key, 0) + 1


@contextlib.asynccontextmanager
async def bus_tap(bs: BenchStack) -> AsyncIterator[BusTap]:
    tap = BusTap()
    connection = await aio_pika.connect(bs.settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(
            Topology.from_settings(bs.settings).exchange_name, ensure=False
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")

        async def seen(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            tap.see(message)

        await queue.consume(seen, no_ack=True)
        yield tap
        await asyncio.sleep(1.0)  # the tail of the published events reaches the tap
    finally:
        await connection.close()


@dataclass(frozen=True)
class Counters:
    cpu: dict[str, float]
    rows_written: int
    database_bytes: int
    wal_lsn: str


async def read_counters(bs: BenchStack) -> Counters:
    pids = bs.service_pids()
    async with bs.pool.acquire() as conn:
        rows = await conn.fetchval(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint FROM pg_stat_user_tables"
        )
        size = await conn.fetchval("SELECT pg_database_size(current_database())")
        lsn = await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    return Counters(
        cpu={name: tree_cpu_seconds(pid) for name, pid in pids.items()},
        rows_written=int(rows),
        database_bytes=int(size),
        wal_lsn=str(lsn),
    )


async def _wal_bytes(bs: BenchStack, before: str, after: str) -> int:
    return int(
        await bs.pool.fetchval(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint", after, before
        )
    )


async def _settled_stats(bs: BenchStack) -> None:
    """pg_stat_user_tables lags the commits by up to the stats flush interval."""
    await asyncio.sleep(1.5)
    with contextlib.suppress(Exception):
        await bs.pool.execute("SELECT pg_stat_clear_snapshot()")


async def measure(bs: BenchStack, files: list[Path], ocr: str) -> dict[str, Any]:
    """Run the files through the stack and return the per-page costs of doing so."""
    await _settled_stats(bs)
    before = await read_counters(bs)
    async with bus_tap(bs) as tap, http_client() as client:
        ids = [(await bs.submit(client, f.read_bytes(), f.name, ocr=ocr))[0] for f in files]
        await bs.wait_all(ids)
    await _settled_stats(bs)
    after = await read_counters(bs)
    pages = int(
        await bs.pool.fetchval("SELECT count(*) FROM job_pages WHERE job_id = ANY($1::uuid[])", ids)
    )
    for job_id in ids:
        status, text = await bs.job_texts(job_id)
        bs.check_job(f"capacity {job_id}", status, text, baseline_has_text=True)
    per = max(pages, 1)
    wal = await _wal_bytes(bs, before.wal_lsn, after.wal_lsn)
    return {
        "documents": len(files),
        "pages": pages,
        "cpu_seconds_per_page": {
            name: round((after.cpu.get(name, 0.0) - before.cpu.get(name, 0.0)) / per, 5)
            for name in SERVICES
        },
        "bus_messages_per_page": round(tap.messages / per, 3),
        "bus_bytes_per_page": round(tap.body_bytes / per),
        "bus_messages_by_event": dict(sorted(tap.by_key.items())),
        "db_rows_written_per_page": round((after.rows_written - before.rows_written) / per, 2),
        "db_bytes_per_page": round((after.database_bytes - before.database_bytes) / per),
        "db_wal_bytes_per_page": round(wal / per),
        "blob_bytes_per_page": round(sum(f.stat().st_size for f in files) / per),
    }


def workloads(smoke: bool) -> dict[str, tuple[list[Path], str]]:
    text = corpus_files("pdf_text", (".pdf",))
    scans = corpus_files("pdf_scanned", (".pdf", ".png", ".jpg", ".jpeg", ".tif", ".tiff"))
    if smoke:
        text, scans = text[:1], scans[:1]
    return {"text_pdf": (text, "auto"), "scan": (scans, "auto")}


async def run(
    bs: BenchStack, work: Path, smoke: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """No target: the per-page figures feed docs/capacity.md (python -m scripts.gen_capacity)."""
    per_page = {
        name: await measure(bs, files, ocr) for name, (files, ocr) in workloads(smoke).items()
    }
    return [], {"per_page": per_page}
