"""Isolation and limits, end to end: hostile or oversized input fails its own job with a
reason a person can read, a failing page does not fail the job, and the workers live on.

Stacks of their own run with tiny limits; the session stack covers file names and the
private-address guard of documents published straight onto the bus.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.fixtures import docx_file, pdf_with_pages, text_image
from tests.integration.conftest import free_port
from tests.integration.stack_client import StackClient, publish_as_upstream
from tests.stack_fixture import own_stack

pytestmark = pytest.mark.integration

MAX_PAGES = 3
MAX_CHARS = 20_000
OCR_TIMEOUT = 0.05
EXTRACT_TIMEOUT = 0.2


@pytest.fixture(scope="module")
async def limited_stack(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None
) -> AsyncIterator[StackClient]:
    overrides = {
        "DOCPIPE_MAX_PAGES": str(MAX_PAGES),
        "DOCPIPE_MAX_EXTRACTED_CHARS": str(MAX_CHARS),
        "DOCPIPE_OCR_TIMEOUT_SECONDS": str(OCR_TIMEOUT),
    }
    async with own_stack(test_settings, "lim", overrides) as client:
        yield client


# Every document here must really be processed under this stack's limits: the same bytes may
# have completed under the default limits in another test's job (same database and tenant),
# and duplicate detection would reuse that result. So each submit sends force=true.


async def assert_alive(client: StackClient, tmp_path: Path) -> None:
    """The workers still serve: a small text document completes."""
    doc = tmp_path / f"alive-{uuid.uuid4().hex[:6]}.txt"
    doc.write_text("Still alive after a bad document.\n")
    final = await client.wait(await client.submit_ok(doc), timeout=60)
    assert final["status"] == "completed", final
    assert not client.stack.deaths(), client.stack.deaths()


async def test_too_many_pages_fails_with_a_reason(
    limited_stack: StackClient, tmp_path: Path
) -> None:
    pdf = pdf_with_pages(tmp_path / "long.pdf", [f"Page {n}." for n in range(1, MAX_PAGES + 2)])
    final = await limited_stack.wait(await limited_stack.submit_ok(pdf, force=True), timeout=60)
    assert final["status"] == "failed"
    assert (
        final["error"] == f"The PDF has {MAX_PAGES + 1} pages, more than the limit of {MAX_PAGES}."
    )
    await assert_alive(limited_stack, tmp_path)


async def test_docx_bomb_stops_at_the_character_limit(
    limited_stack: StackClient, tmp_path: Path
) -> None:
    # Highly compressible: ~1.2 MB of text in a DOCX of a few kilobytes.
    line = "All work and no play makes Jack a dull boy. " * 6
    bomb = docx_file(tmp_path / "bomb.docx", [line] * 5000)
    assert bomb.stat().st_size < 100_000
    final = await limited_stack.wait(await limited_stack.submit_ok(bomb, force=True), timeout=60)
    assert final["status"] == "failed"
    assert final["error"] == f"The document has more text than the limit of {MAX_CHARS} characters."
    await assert_alive(limited_stack, tmp_path)


async def test_a_failing_page_is_listed_and_the_job_completes(
    limited_stack: StackClient, tmp_path: Path
) -> None:
    # The scanned page cannot be OCRed within the (tiny) OCR time limit; the text page can.
    pdf = pdf_with_pages(
        tmp_path / "half.pdf",
        ["A page with a real text layer.", text_image(["A scan OCR will not finish."])],
    )
    job_id = await limited_stack.submit_ok(pdf, force=True)
    final = await limited_stack.wait(job_id, timeout=60)
    assert final["status"] == "completed", final
    result = (await limited_stack.result(job_id)).json()
    assert result["partial"] is False
    assert "real text layer" in result["pages"][0]["text"]
    (failed,) = result["failed_pages"]
    assert failed["page"] == 2
    assert f"longer than the {OCR_TIMEOUT:g} s time limit" in failed["reason"], failed
    assert result["pages"][1]["error"] == failed["reason"]
    await assert_alive(limited_stack, tmp_path)


async def test_extraction_wall_clock_timeout_fails_the_document(
    test_settings: Settings, db_pool: asyncpg.Pool, rabbit_available: None, tmp_path: Path
) -> None:
    overrides = {"DOCPIPE_EXTRACT_TIMEOUT_SECONDS": str(EXTRACT_TIMEOUT)}
    scans = [text_image([f"Slow page {n}"]) for n in range(1, 7)]
    pdf = pdf_with_pages(tmp_path / "slow.pdf", scans)
    async with own_stack(
        test_settings, "tmo", overrides, services=("ingest", "extractor", "progress")
    ) as client:
        final = await client.wait(await client.submit_ok(pdf, force=True), timeout=60)
        assert final["status"] == "failed"
        assert final["error"] == (
            f"Processing took longer than the {EXTRACT_TIMEOUT:g} s time limit and was stopped."
        )
        # The extractor process lives on, and killed its child (no extraction child is left).
        proc = client.stack.services["extractor"].proc
        assert proc is not None and proc.returncode is None
        assert not client.stack.deaths(), client.stack.deaths()


async def test_hostile_file_name_is_sanitised(stack: StackClient, tmp_path: Path) -> None:
    pdf = pdf_with_pages(tmp_path / "plain.pdf", ["Nothing to see."]).read_bytes()
    # Built by hand: HTTP clients percent-encode a NUL in a file name, a hostile one need not.
    boundary = "docpipe-test-boundary"
    body = (
        f"--{boundary}\r\n".encode()
        + b'Content-Disposition: form-data; name="file"; filename="../../etc/passwd\x00.pdf"\r\n'
        + b"Content-Type: application/pdf\r\n\r\n"
        + pdf
        + f"\r\n--{boundary}--\r\n".encode()
    )
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{stack.api}/v1/jobs",
            headers={
                **stack.headers(),
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            content=body,
        )
    assert response.status_code == 202, response.text
    assert response.json()["filename"] == "passwd.pdf"
    job_id = str(response.json()["job_id"])
    final = await stack.wait(job_id)
    assert final["status"] == "completed" and final["filename"] == "passwd.pdf"
    assert (await stack.result(job_id)).json()["filename"] == "passwd.pdf"


async def test_bus_upload_from_a_loopback_url_is_refused(
    stack: StackClient, test_settings: Settings
) -> None:
    event = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=test_settings.tenants_by_key[stack.key],
        # Whatever listens there (here: nothing), a loopback address is never fetched.
        document_uri=f"http://127.0.0.1:{free_port()}/x",
        filename="x.pdf",
    )
    await publish_as_upstream(test_settings, event)
    final = await stack.wait(str(event.job_id), timeout=60)
    assert final["status"] == "failed"
    assert final["error"] == (
        "The address 127.0.0.1 points to a private or local network; downloading from it is "
        "not allowed."
    )
