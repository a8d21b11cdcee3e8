"""A Word document through the whole running pipeline (HTTP in, sandboxed extraction,
analysis, progress, result out): its page and section breaks make pages, each section's
header is read once, and its comments appear only when the job asks for them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.stack_client import StackClient
from tests.unit.docx_fixtures import paged_docx, whole_docx

pytestmark = pytest.mark.integration


async def finished(stack: StackClient, path: Path, **form: str) -> tuple[str, dict[str, Any]]:
    """Submit with exactly these options (and force: the same bytes are sent twice); the job
    id and its result once completed."""
    body = await stack.post_job(path.read_bytes(), name=path.name, force="true", **form)
    job_id = str(body["job_id"])
    final = await stack.wait(job_id, timeout=120)
    assert final["status"] == "completed", final
    return job_id, (await stack.result(job_id)).json()


async def test_docx_pages_and_comments_through_the_pipeline(
    stack: StackClient, tmp_path: Path
) -> None:
    paged = paged_docx(tmp_path / "paged.docx")
    whole = whole_docx(tmp_path / "whole.docx")
    (paged_job, paged_result), (_, plain), (_, commented) = await asyncio.gather(
        finished(stack, paged),
        finished(stack, whole),
        finished(stack, whole, docx_comments="true"),
    )

    assert paged_result["format"] == "docx"
    assert paged_result["pages_total"] == 4
    pages = [page["text"] for page in paged_result["pages"]]
    assert pages[0].startswith("Acme header") and pages[0].endswith("Before the break.")
    assert pages[1] == "After the break.\n\nAcme footer"
    assert pages[2] == "Section two text.\n\nAnnex header\n\nSection three, same page."
    assert pages[3] == "Own page."
    assert "\n".join(pages).count("Acme header") == 1, "a section's header is read once"
    assert {chunk["page"] for chunk in paged_result["chunks"]} == {1, 2, 3, 4}

    async with httpx.AsyncClient(timeout=30) as client:
        markdown = await client.get(
            f"{stack.api}/v1/jobs/{paged_job}/result",
            params={"format": "markdown"},
            headers=stack.headers(),
        )
    assert markdown.status_code == 200
    assert "<!-- page 4 -->" in markdown.text and "Own page." in markdown.text

    plain_text = "\n".join(page["text"] for page in plain["pages"])
    commented_text = "\n".join(page["text"] for page in commented["pages"])
    assert "[1] A tachyon walks into a bar." in plain_text
    assert "Boxed note" in plain_text and "(Inner A | Inner B; Inner C | Inner D)" in plain_text
    assert "Count again" not in plain_text
    assert "Comment (Ingrid Larsen): Count again" in commented_text
    assert not stack.stack.deaths(), f"a service process died: {stack.stack.deaths()}"
