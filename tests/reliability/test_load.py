"""Load: 200 jobs at once, a mixed corpus with about 10% bad files. Every good job completes,
every bad one fails with a reason (or is refused at upload), and an accounting of the bus
proves no message was lost: what was published per routing key (seen by a capture queue bound
to '#') against what each consumer group received, acked, retried and dead-lettered."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from shared.events import ACTIVE_STATUSES, JobStatus
from shared.topology import GROUPS
from tests.fixtures import pdf_with_pages
from tests.reliability.conftest import ReliabilityStack

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.corpus]

TOTAL_JOBS = 200
# Bad files that never yield a document; the rest of bad/ is repaired well enough to complete
# (qpdf-bad1, qpdf-issue-150, pdfjs-bomb_giant, ...) or opens with a password.
BAD = (
    "pdfjs-Pages-tree-refs.pdf",
    "plumber-empty.pdf",
    "poi-bug53475-password-is-pass.docx",
    "poi-clusterfuzz-POIXWPFFuzzer-6442791109263360.docx",
    "poi-truncated62886.docx",
    "pypdf-r4-aes-user-password.pdf",
    "qpdf-bad2.pdf",
    "qpdf-issue-100.pdf",
    "qpdf-issue-143.pdf",
    "qpdf-issue-146.pdf",
    "qpdf-pages-loop.pdf",
    "samples-libreoffice-writer-password.pdf",
    "snappy-paper-100k.pdf",
)
BAD_JOBS = 20
# Slow to extract or analyse for the time they would add: left to the corpus tests.
TEXT_SKIP = {"pdfjs-pdkids.pdf", "pdfjs-TAMReview.pdf"}
SCANS = ("tess-phototest.tif", "ocrmypdf-linn.png", "tess-phototest.tif", "ocrmypdf-linn.pdf")
OFFICE = (
    "csv-seaborn-penguins.csv",
    "docx-mammoth-footnotes.docx",
    "docx-mammoth-tables.docx",
    "docx-python-docx-test.docx",
    "html-readability-wikipedia.html",
)
TEXT_JOBS = 50
OFFICE_JOBS = 24


def mixed_load(corpus: Path, tmp: Path) -> list[tuple[str, Path]]:
    """(kind, path) for TOTAL_JOBS submissions: text PDFs, scans, office, generated, bad."""
    text = sorted(p for p in (corpus / "pdf_text").glob("*.pdf") if p.name not in TEXT_SKIP)
    load: list[tuple[str, Path]] = []
    load += [("bad", corpus / "bad" / BAD[i % len(BAD)]) for i in range(BAD_JOBS)]
    load += [("text", text[i % len(text)]) for i in range(TEXT_JOBS)]
    load += [("scan", corpus / "pdf_scanned" / name) for name in SCANS]
    load += [("office", corpus / "office" / OFFICE[i % len(OFFICE)]) for i in range(OFFICE_JOBS)]
    generated = TOTAL_JOBS - len(load)
    for i in range(generated):
        pages = [
            f"Generated document {i}, page {n}. Order {1000 + i} ships on 2025-0{n}-1{n}."
            for n in range(1, 2 + i % 3)
        ]
        load.append(("generated", pdf_with_pages(tmp / f"gen{i:03d}.pdf", pages)))
    return load


class Capture:
    """A queue bound to '#' on the stack's exchange: every event published, by routing key."""

    def __init__(self, rs: ReliabilityStack) -> None:
        self.rs = rs
        self.by_key: Counter[str] = Counter()
        self.message_ids: Counter[str] = Counter()
        self._conn: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self._conn = await aio_pika.connect_robust(self.rs.settings.amqp_url)
        channel = await self._conn.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.get_exchange(self.rs.topology.exchange_name)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key="#")

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.by_key[msg.routing_key or ""] += 1
            self.message_ids[msg.message_id or ""] += 1

        await queue.consume(on_message, no_ack=True)

    async def stop(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def published_to(self, group: str) -> int:
        keys = {g.name: g.binding_keys for g in GROUPS}[group]
        if "#" in keys:
            return sum(self.by_key.values())
        return sum(n for key, n in self.by_key.items() if key in keys)


async def submit_all(rs: ReliabilityStack, load: list[tuple[str, Path]]) -> list[httpx.Response]:
    """Upload everything at once, as a careful client does: each upload carries an
    Idempotency-Key and is sent again with it after a transport error (a connection can be
    reset in the middle of the burst), so a retry can never make a second job. The load repeats
    corpus files to reach TOTAL_JOBS, so every upload sends force=true: each is processed (a
    load, not a reuse of the first copy's result) and publishes its document.uploaded."""
    limits = httpx.Limits(max_connections=32, keepalive_expiry=2.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def submit(path: Path) -> httpx.Response:
            headers = {**rs.client.headers(), "Idempotency-Key": uuid.uuid4().hex}
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(httpx.TransportError),
                stop=stop_after_attempt(3),
                wait=wait_fixed(0.5),
                reraise=True,
            ):
                with attempt:
                    return await http.post(
                        f"{rs.client.api}/v1/jobs",
                        headers=headers,
                        files={"file": (path.name, path.read_bytes())},
                        data={"ocr": "auto", "force": "true"},
                    )
            raise AssertionError("unreachable: the last attempt returns or raises")

        return list(await asyncio.gather(*(submit(p) for _, p in load)))


async def settled_accounting(
    rs: ReliabilityStack, capture: Capture, timeout: float = 30.0
) -> tuple[dict[str, int], dict[str, Counter[tuple[str, str]]]]:
    """Wait until every queue is empty and every group has received what was published to
    it (plus its own retries); returns the last depths and metrics either way."""
    deadline = time.monotonic() + timeout
    while True:
        depths = await rs.queue_depths()
        metrics = await rs.metrics()
        merged: Counter[tuple[str, str]] = sum(metrics.values(), Counter())
        balanced = all(
            merged[(g.name, "received")]
            == capture.published_to(g.name) + merged[(g.name, "retried")]
            for g in GROUPS
        )
        if (balanced and not any(depths.values())) or time.monotonic() > deadline:
            return depths, metrics
        await asyncio.sleep(0.5)


Accepted = dict[str, tuple[str, Path]]  # job id -> (kind, path) of the accepted uploads


def sort_responses(
    load: list[tuple[str, Path]], responses: list[httpx.Response]
) -> tuple[Accepted, list[tuple[str, int, str]]]:
    """The accepted uploads, and the refused ones (name, status, detail): only bad files may
    be refused, with a 4xx and a sentence."""
    accepted: Accepted = {}
    refused: list[tuple[str, int, str]] = []
    for (kind, path), response in zip(load, responses, strict=True):
        if response.status_code == 202:
            accepted[response.json()["job_id"]] = (kind, path)
            continue
        assert kind == "bad", (path.name, response.status_code, response.text)
        assert 400 <= response.status_code < 500, (path.name, response.status_code)
        detail = response.json().get("detail")
        assert isinstance(detail, str) and len(detail) > 10, (path.name, detail)
        refused.append((path.name, response.status_code, detail))
    return accepted, refused


def tally_outcomes(
    accepted: Accepted, statuses: dict[str, tuple[str, str | None]]
) -> tuple[Counter[tuple[str, str]], list[tuple[str, str, str, str | None]]]:
    """The count of (kind, status), and the jobs that ended the wrong way: a good job that did
    not complete, or a bad one that did not fail with a sentence (or failed with a traceback)."""
    outcome: Counter[tuple[str, str]] = Counter()
    wrong: list[tuple[str, str, str, str | None]] = []
    for job_id, (status, error) in statuses.items():
        kind, path = accepted[job_id]
        outcome[(kind, status)] += 1
        if kind == "bad":
            explained = bool(error and len(error) > 15 and error[0].isupper())
            if status != JobStatus.FAILED or not explained or "Traceback" in (error or ""):
                wrong.append((kind, path.name, status, error))
        elif status != JobStatus.COMPLETED:
            wrong.append((kind, path.name, status, error))
    return outcome, wrong


def check_accounting(
    capture: Capture, depths: dict[str, int], metrics: dict[str, Counter[tuple[str, str]]]
) -> None:
    """Every queue drained, and every group received what was published to it (plus its own
    retries) and settled all of it, nothing dead-lettered, no event published twice."""
    print(f"published by routing key: {dict(sorted(capture.by_key.items()))}")
    assert not {q: n for q, n in depths.items() if n}, f"queues not drained: {depths}"
    merged: Counter[tuple[str, str]] = sum(metrics.values(), Counter())
    for group in GROUPS:
        g = group.name
        received, acked = merged[(g, "received")], merged[(g, "acked")]
        retried, dead = merged[(g, "retried")], merged[(g, "dead_lettered")]
        published = capture.published_to(g)
        print(
            f"{g}: published {published}, received {received} = acked {acked} + "
            f"retried {retried} + dead-lettered {dead}"
        )
        assert received == published + retried, f"{g}: a message was lost or duplicated"
        assert received == acked + retried + dead, f"{g}: a message was left unsettled"
        assert dead == 0, f"{g}: {dead} dead-lettered"
    duplicates = {m: n for m, n in capture.message_ids.items() if n > 1}
    assert not duplicates, f"events published more than once: {len(duplicates)}"


async def leftovers(rs: ReliabilityStack) -> tuple[int, int, int]:
    """(open jobs, unpublished outbox rows, dead letters), straight from the database."""
    conn = await asyncpg.connect(rs.settings.database_url)
    try:
        open_jobs = await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE status = ANY($1::text[])",
            [str(s) for s in ACTIVE_STATUSES],
        )
        unpublished = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        dead_letters = await conn.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await conn.close()
    return int(open_jobs), int(unpublished), int(dead_letters)


async def test_two_hundred_mixed_jobs_all_end_and_every_message_is_accounted_for(
    private_stack: Any, corpus: Path, tmp_path: Path
) -> None:
    load = mixed_load(corpus, tmp_path)
    assert len(load) == TOTAL_JOBS
    async with private_stack("load") as rs:
        capture = Capture(rs)
        await capture.start()
        try:
            t0 = time.monotonic()
            responses = await submit_all(rs, load)
            submitted = time.monotonic() - t0
            accepted, refused = sort_responses(load, responses)
            statuses = await rs.wait_all(list(accepted), timeout=300, poll=1.0)
            finished = time.monotonic() - t0
            outcome, wrong = tally_outcomes(accepted, statuses)
            print(
                f"{TOTAL_JOBS} jobs: uploads took {submitted:.1f} s, all ended after "
                f"{finished:.1f} s; refused at upload: {len(refused)} "
                f"{dict(Counter(c for _, c, _ in refused))}; "
                f"outcomes: {dict(sorted(outcome.items()))}"
            )
            assert not wrong, f"jobs that ended the wrong way: {sorted(set(wrong))}"
            assert sum(outcome.values()) + len(refused) == TOTAL_JOBS
            assert outcome[("bad", JobStatus.FAILED)] + len(refused) == BAD_JOBS

            depths, metrics = await settled_accounting(rs, capture)
        finally:
            await capture.stop()

        check_accounting(capture, depths, metrics)
        assert capture.by_key["document.uploaded"] == len(accepted)
        assert capture.by_key["job.completed"] == sum(
            n for (_kind, status), n in outcome.items() if status == JobStatus.COMPLETED
        )
        assert capture.by_key["job.failed"] == outcome[("bad", JobStatus.FAILED)]
        assert await leftovers(rs) == (0, 0, 0), "(open jobs, unpublished outbox, dead letters)"
        assert not rs.stack.deaths(), f"a service process died: {rs.stack.deaths()}"
