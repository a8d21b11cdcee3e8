"""`docpipe submit DIR/ --batch --follow` against the whole running stack: the CLI uploads a
folder as one batch to the real ingest, follows the real progress service's batch WebSocket
to the end, and leaves a line per document with its final status and the batch's bar at
100%."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner, Result

from docpipe_cli.commands import app as cli
from tests.fixtures import docx_file, pdf_with_pages, text_image
from tests.integration.stack_client import StackClient

pytestmark = pytest.mark.integration


async def docpipe(stack: StackClient, *args: str) -> Result:
    # The CLI is synchronous (it runs its own event loop): off this test's loop.
    return await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["--api", stack.api, "--ws", stack.ws, "--key", stack.key, *args],
        catch_exceptions=False,
    )


async def test_submit_a_folder_as_a_batch_and_follow_it_to_the_end(
    stack: StackClient, tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    folder = tmp_path / "dealer"
    folder.mkdir()
    pdf_with_pages(folder / "a-text.pdf", ["Invoice 17\nTotal due: 120 EUR", "Page two."])
    pdf_with_pages(folder / "b-scan.pdf", [text_image(["Delivery note 42", "Three pallets"])])
    docx_file(folder / "c-letter.docx", ["Dear customer,", "your order has shipped."])

    r = await asyncio.wait_for(
        docpipe(stack, "submit", str(folder), "--batch", "--follow", "--name", "dealer run"),
        timeout=240,
    )
    out = r.output
    assert r.exit_code == 0, out
    match = re.search(r"^batch ([0-9a-f-]{36})  3 documents$", out, re.MULTILINE)
    assert match, out
    batch_id = match.group(1)
    # Each document's final status, on a line of its own.
    for name in ("a-text.pdf", "b-scan.pdf", "c-letter.docx"):
        assert re.search(rf"^{re.escape(name)}  completed$", out, re.MULTILINE), out
    # The overall bar, as the follow left it: 100%, every document done.
    bar = [line for line in out.splitlines() if "dealer run" in line]
    assert bar and "100%" in bar[-1] and "3/3 done" in bar[-1], out
    assert re.search(rf"^batch {batch_id} completed  3/3 done", out, re.MULTILINE), out

    row = await db_pool.fetchrow(
        "SELECT status, percent, jobs_completed, finished_at FROM batches WHERE batch_id = $1",
        uuid.UUID(batch_id),
    )
    assert row is not None and row["status"] == "completed" and row["jobs_completed"] == 3
    assert float(row["percent"]) == 100.0 and row["finished_at"] is not None
