"""The docpipe CLI against the real ingest service (uvicorn on a free port)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import uvicorn
from typer.testing import CliRunner, Result

from docpipe_cli.commands import app as cli
from scripts.stack import free_port
from services.ingest.app import create_app
from shared.settings import Settings
from tests.conftest import delete_bus

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def api_url(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[str]:
    port = free_port()
    # A bus prefix of its own, so the session stack's workers never pick these jobs up.
    settings = test_settings.model_copy(update={"bus_prefix": f"{test_settings.bus_prefix}_cli"})
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task
    await delete_bus(settings)


async def docpipe(api: str, *args: str, key: str = "dev-key") -> Result:
    # The CLI is synchronous; keep the event loop (and the server on it) running meanwhile.
    return await asyncio.to_thread(
        CliRunner().invoke, cli, ["--api", api, "--key", key, *args], catch_exceptions=False
    )


async def test_submit_status_cancel_result(api_url: str, tmp_path: Path) -> None:
    doc = tmp_path / "notes.txt"
    doc.write_text("Some notes to process.\nA second line.\n")
    submitted = await docpipe(api_url, "submit", str(doc), "--priority", "3", "--ocr", "never")
    assert submitted.exit_code == 0, submitted.output
    # The server shares this process, so its log lines may appear in the output too.
    match = re.search(r"^([0-9a-f-]{36})  notes\.txt$", submitted.output, re.MULTILINE)
    assert match, submitted.output
    job_id = match.group(1)

    status = await docpipe(api_url, "status", job_id)
    assert status.exit_code == 0, status.output
    assert "queued" in status.output and "notes.txt" in status.output

    pending = await docpipe(api_url, "result", job_id)
    assert pending.exit_code == 1
    assert "the result is available once it has completed" in pending.output

    cancelled = await docpipe(api_url, "cancel", job_id)
    assert cancelled.exit_code == 0 and "Cancelled" in cancelled.output
    again = await docpipe(api_url, "cancel", job_id)
    assert again.exit_code == 0 and "already cancelled" in again.output

    other = await docpipe(api_url, "status", job_id, key="dev-key-2")
    assert other.exit_code == 1 and "404" in other.output


async def test_clear_errors(api_url: str, tmp_path: Path) -> None:
    doc = tmp_path / "a.txt"
    doc.write_text("hello there\n")
    refused = await docpipe(api_url, "submit", str(doc), key="not-a-key")
    assert refused.exit_code == 1
    assert "API key was refused (401)" in refused.output

    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    r = await docpipe(api_url, "submit", str(empty))
    assert r.exit_code == 1 and "The uploaded file is empty." in r.output

    r = await docpipe(api_url, "status", "00000000-0000-4000-8000-000000000000")
    assert r.exit_code == 1 and "No such job" in r.output

    r = await docpipe("http://127.0.0.1:9", "status", "x")
    assert r.exit_code == 1 and "Cannot reach" in r.output


async def test_submit_a_folder_as_one_batch(
    api_url: str, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    folder = tmp_path / "dealer"
    folder.mkdir()
    (folder / "a.txt").write_text("First document of the batch.\n")
    (folder / "b.txt").write_text("Second document of the batch.\n")
    (folder / ".DS_Store").write_bytes(b"\x00")
    r = await docpipe(
        api_url, "submit", str(folder), "--batch", "--name", "dealer 7", "--label", "dealer=7"
    )
    assert r.exit_code == 0, r.output
    match = re.search(r"^batch ([0-9a-f-]{36})  2 documents$", r.output, re.MULTILINE)
    assert match, r.output
    jobs = re.findall(r"^([0-9a-f-]{36})  ([ab]\.txt)$", r.output, re.MULTILINE)
    assert [name for _, name in jobs] == ["a.txt", "b.txt"]
    rows = await db_pool.fetch(
        "SELECT j.job_id::text, j.filename, j.labels, b.name FROM jobs j "
        "JOIN batches b USING (batch_id) WHERE b.batch_id = $1 ORDER BY j.created_at",
        uuid.UUID(match.group(1)),
    )
    assert [(r["job_id"], r["filename"]) for r in rows] == jobs
    assert {r["name"] for r in rows} == {"dealer 7"}
    assert all(r["labels"] == {"dealer": "7"} for r in rows)

    empty = tmp_path / "empty-folder"
    empty.mkdir()
    r = await docpipe(api_url, "submit", str(empty), "--batch")
    assert r.exit_code == 1 and "no documents" in r.output


async def test_submit_with_ocr_languages(
    api_url: str, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    doc = tmp_path / "brief.txt"
    doc.write_text(f"Ein Brief {uuid.uuid4()}.\n")
    refused = await docpipe(api_url, "submit", str(doc), "--ocr-lang", "deu+tlh")
    assert refused.exit_code == 1
    said = " ".join(refused.output.split())  # the console wraps long lines
    assert "ocr_lang: The OCR language 'tlh' is not installed; installed: deu, eng" in said
    submitted = await docpipe(api_url, "submit", str(doc), "--ocr-lang", "deu+eng")
    assert submitted.exit_code == 0, submitted.output
    match = re.search(r"^([0-9a-f-]{36})  brief\.txt$", submitted.output, re.MULTILINE)
    assert match, submitted.output
    stored = await db_pool.fetchval(
        "SELECT ocr_lang FROM jobs WHERE job_id = $1", uuid.UUID(match.group(1))
    )
    assert stored == "deu+eng"


async def test_submit_with_docx_comments(
    api_url: str, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    doc = tmp_path / "review.txt"
    doc.write_text(f"Reviewed {uuid.uuid4()}.\n")
    asked: dict[str, bool] = {}
    for flags, name in (([], "plain"), (["--docx-comments"], "commented")):
        submitted = await docpipe(api_url, "submit", str(doc), *flags)
        assert submitted.exit_code == 0, submitted.output
        match = re.search(r"^([0-9a-f-]{36})  review\.txt$", submitted.output, re.MULTILINE)
        assert match, submitted.output
        # The option travels on the job's document.uploaded event (its outbox row).
        asked[name] = await db_pool.fetchval(
            "SELECT (payload->>'docx_comments')::boolean FROM outbox "
            "WHERE routing_key = 'document.uploaded' AND payload->>'job_id' = $1",
            match.group(1),
        )
    assert asked == {"plain": False, "commented": True}


async def test_submit_with_or_without_pdf_tables(
    api_url: str, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    doc = tmp_path / "berths.txt"
    doc.write_text(f"Berths {uuid.uuid4()}.\n")
    stored: dict[str, bool | None] = {}
    for flags, name in (([], "default"), (["--pdf-tables"], "on"), (["--no-pdf-tables"], "off")):
        submitted = await docpipe(api_url, "submit", str(doc), *flags)
        assert submitted.exit_code == 0, submitted.output
        match = re.search(r"^([0-9a-f-]{36})  berths\.txt$", submitted.output, re.MULTILINE)
        assert match, submitted.output
        stored[name] = await db_pool.fetchval(
            "SELECT pdf_tables FROM jobs WHERE job_id = $1", uuid.UUID(match.group(1))
        )
    assert stored == {"default": None, "on": True, "off": False}
