"""A batch of mixed documents through the whole running stack, followed on one batch
WebSocket: it reaches its final message with the right counts, percent never decreases, and
a reconnect with ?after= replays exactly what it missed."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect

from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.integration.stack_client import StackClient, publish_as_upstream
from tests.integration.test_batch_progress import check_stream, new_batch

pytestmark = pytest.mark.integration

# (corpus file, how its job ends)
MIXED = [
    ("pdf_text/pypdf-crazyones.pdf", "completed"),
    ("pdf_text/pdfbox-simple-openoffice.pdf", "completed"),
    ("pdf_scanned/tess-phototest.tif", "completed"),
    ("office/docx-mammoth-tables.docx", "completed"),
    ("office/csv-seaborn-penguins.csv", "completed"),
    ("bad/pypdf-r4-aes-user-password.pdf", "failed"),  # no password given
]


async def test_a_mixed_batch_followed_on_one_websocket(
    stack: StackClient,
    corpus: Path,
    test_settings: Settings,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
):
    tenant = test_settings.tenants_by_key[stack.key]
    batch_id = await new_batch(db_pool, tenant=tenant, name="mixed")
    uploads = []
    for name, _ in MIXED:
        doc = tmp_path / Path(name).name
        shutil.copyfile(corpus / name, doc)
        uploads.append(
            DocumentUploaded(
                job_id=uuid.uuid4(),
                tenant=tenant,
                document_uri=doc.resolve().as_uri(),
                filename=doc.name,
                batch_id=batch_id,
            )
        )

    url = f"{stack.ws}/v1/batches/{batch_id}/events?token={stack.key}"
    messages: list[dict[str, Any]] = []
    cut = asyncio.Event()

    async def follow_until_cut() -> None:
        """The first client: reads until it has seen a few messages, then goes away."""
        async with connect(url) as ws:
            async for raw in ws:
                messages.append(json.loads(raw))
                if len(messages) >= 6:
                    break
        cut.set()

    first = asyncio.create_task(follow_until_cut())
    # The ingest way: every job of the batch exists before any of them runs.
    await asyncio.gather(*(publish_as_upstream(test_settings, u) for u in uploads))
    async with asyncio.timeout(240):
        await first
        # Resume where the first client stopped: exactly the rest, until the final message.
        async with connect(f"{url}&after={messages[-1]['seq']}") as ws:
            async for raw in ws:
                messages.append(json.loads(raw))
            assert ws.close_code == 1000

    snapshot, stream = messages[0], messages[1:]
    assert snapshot["type"] == "batch" and stream[0]["seq"] == snapshot["seq"] + 1
    aggregates = check_stream(stream)
    assert snapshot["percent"] <= aggregates[0]["percent"]
    final = aggregates[-1]
    expected = {
        status: sum(1 for _, s in MIXED if s == status) for status in ("completed", "failed")
    }
    assert final["status"] == "completed", final  # one failed: completed, with the counts
    assert final["jobs_total"] == len(MIXED)
    assert (final["jobs_completed"], final["jobs_failed"]) == (
        expected["completed"],
        expected["failed"],
    )
    assert final["jobs_cancelled"] == final["jobs_queued"] == final["jobs_running"] == 0
    assert final["percent"] == 100 and final["pages_done"] >= expected["completed"]

    # Every job's final update reached the batch stream, and matches the job's own status.
    last_of: dict[str, dict[str, Any]] = {}
    for m in messages:
        if m["type"] == "job":
            last_of[m["job"]["job_id"]] = m["job"]
    assert set(last_of) == {str(u.job_id) for u in uploads}
    for upload, (_, status) in zip(uploads, MIXED, strict=True):
        assert last_of[str(upload.job_id)]["status"] == status
        assert last_of[str(upload.job_id)]["final"]

    # The full replay is what both clients saw together.
    async with asyncio.timeout(30), connect(f"{url}&after=0") as ws:
        replay = [json.loads(raw) async for raw in ws]
    assert replay[-len(stream) :] == stream
    async with httpx.AsyncClient(timeout=10) as http:
        status = await http.get(
            f"{stack.stack.url('progress')}/v1/batches/{batch_id}", headers=stack.headers()
        )
    assert status.status_code == 200 and status.json() == final
