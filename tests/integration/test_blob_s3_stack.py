"""End to end on the S3 backend: a stack of the five services with DOCPIPE_BLOB_BACKEND=s3 on
moto's server processes a text PDF, a PDF with a scanned page and a scanned PNG (OCR).

Its cache holds one byte, so every blob is evicted as soon as nothing uses it: each service
reads what it needs from the bucket (the upload to sniff it, the document to extract it, each
page image to OCR it), as it would on a machine of its own, and the children's files stay while
they read them (pinned)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from scripts.stack import SERVICES
from shared.blob_s3 import KEY_PREFIX
from shared.settings import Settings
from tests.fixtures import pdf_with_pages, text_image
from tests.integration.blob_server import S3Server, moto_server
from tests.integration.stack_client import StackClient
from tests.stack_fixture import own_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with moto_server() as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()


@pytest.fixture(scope="module")
async def s3_stack(
    test_settings: Settings,
    db_pool: asyncpg.Pool,
    rabbit_available: None,
    s3: S3Server,
    bucket: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[StackClient]:
    cache = tmp_path_factory.mktemp("s3-cache")
    overrides = {
        **s3.env(bucket),
        "DOCPIPE_BLOB_DIR": str(cache),
        "DOCPIPE_BLOB_CACHE_MAX_BYTES": "1",
    }
    # The five services; no model server (these jobs ask for no LLM analysis).
    async with own_stack(test_settings, "s3", overrides, services=SERVICES) as client:
        yield client


def stored(s3: S3Server, bucket: str) -> set[str]:
    return {key.removeprefix(KEY_PREFIX) for key in s3.keys(bucket)}


async def completed(client: StackClient, path: Path) -> dict[str, object]:
    # force: the same bytes may have completed on the session stack (local blobs) already.
    job_id = await client.submit_ok(path, force=True)
    final = await client.wait(job_id, timeout=120)
    assert final["status"] == "completed", final
    body: dict[str, object] = (await client.result(job_id)).json()
    return body


async def test_a_text_pdf_goes_through_the_bucket(
    s3_stack: StackClient, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    pdf = pdf_with_pages(tmp_path / "s3-text.pdf", ["Invoice 7781 from Initech.", "Page two."])
    before = stored(s3, bucket)
    result = await completed(s3_stack, pdf)
    assert "Invoice 7781 from Initech." in str(result["text"])
    assert stored(s3, bucket) - before == {hashlib.sha256(pdf.read_bytes()).hexdigest()}
    assert not s3_stack.stack.deaths(), s3_stack.stack.deaths()


async def test_scans_are_ocred_from_images_in_the_bucket(
    s3_stack: StackClient, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    scan = text_image(["Delivery note 5150", "Two crates of lamps"])
    pdf = pdf_with_pages(tmp_path / "s3-scan.pdf", ["A typed cover page.", scan])
    png = tmp_path / "s3-scan.png"
    text_image(["Receipt number 3313", "Paid in full"]).save(png)
    before = stored(s3, bucket)

    from_pdf = await completed(s3_stack, pdf)
    assert "Delivery note 5150" in str(from_pdf["text"])
    assert "A typed cover page." in str(from_pdf["text"])
    from_png = await completed(s3_stack, png)
    assert "Receipt number 3313" in str(from_png["text"])

    # The uploads and the rendered page image of the PDF's scan are in the bucket: the OCR
    # service read them from there (its cache keeps nothing).
    added = stored(s3, bucket) - before
    assert len(added) >= 3, added
    assert not s3_stack.stack.deaths(), s3_stack.stack.deaths()
