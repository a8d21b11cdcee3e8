"""OCR languages and orientation through the whole running stack (issue 14, item 5): a job's
`ocr_lang` reaches tesseract (a German scan read in German keeps its umlauts, read with the
deployment's English it does not), over a single upload and a batch; rotated scans come out
upright, as an image and as a PDF page; each OCR page's confidence is in the result; a language
that is not installed is refused at submit with a sentence, over every way of submitting."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures import pdf_with_pages, text_image
from tests.integration.stack_client import StackClient
from tests.quality import cer
from tests.unit.test_ocr_languages import ENGLISH, GERMAN, umlaut_recall

pytestmark = pytest.mark.integration

NOT_INSTALLED = "The OCR language 'tlh' is not installed; installed: "


def png(lines: list[str], degrees: int = 0) -> bytes:
    image = text_image(lines)
    if degrees:
        image = image.rotate(degrees, expand=True)
    buf = io.BytesIO()
    image.save(buf, format="PNG", dpi=(300, 300))
    return buf.getvalue()


async def completed_result(stack: StackClient, job_id: str) -> dict[str, Any]:
    final = await stack.wait(job_id)
    assert final["status"] == "completed", final
    result: dict[str, Any] = (await stack.result(job_id)).json()
    for page in result["pages"]:
        assert page["source"] == "ocr"
        assert 0 <= page["ocr_confidence"] <= 100, page
    return result


async def test_languages_and_rotation_reach_the_result(stack: StackClient, tmp_path: Path) -> None:
    german = png(GERMAN)
    upside_down_pdf = pdf_with_pages(
        tmp_path / "upside-down.pdf", [text_image(ENGLISH).rotate(180)]
    )
    async with httpx.AsyncClient(timeout=60) as client:
        batch = await client.post(
            f"{stack.api}/v1/batches",
            headers=stack.headers(),
            files=[("files", ("brief.png", german, "image/png"))],
            data={"ocr_lang": "deu+eng"},
        )
    assert batch.status_code == 202, batch.text
    submitted = await asyncio.gather(
        stack.post_job(german, name="brief.png", ocr_lang="deu", force="true"),
        stack.post_job(german, name="brief.png", force="true"),  # the deployment's eng
        stack.post_job(png(ENGLISH, 90), name="turned.png", force="true"),
        stack.post_job(upside_down_pdf.read_bytes(), name="upside-down.pdf", force="true"),
    )
    ids = [s["job_id"] for s in submitted] + [batch.json()["jobs"][0]["job_id"]]
    in_german, in_english, turned, upside_down, batched = await asyncio.gather(
        *(completed_result(stack, job_id) for job_id in ids)
    )
    views = [(await stack.job(job_id)).json() for job_id in ids]
    assert [v["ocr_lang"] for v in views] == ["deu", None, None, None, "deu+eng"]
    expected = "\n".join(GERMAN)
    assert umlaut_recall(expected, in_german["text"]) >= 0.9
    assert umlaut_recall(expected, batched["text"]) >= 0.9
    assert umlaut_recall(expected, in_english["text"]) <= 0.5
    assert in_german["pages"][0]["ocr_confidence"] > in_english["pages"][0]["ocr_confidence"]
    for result in (turned, upside_down):
        assert cer("\n".join(ENGLISH), result["text"]) <= 0.05, result["text"]
        assert result["pages"][0]["ocr_confidence"] > 80


async def test_a_language_that_is_not_installed_is_refused_at_submit(
    stack: StackClient,
) -> None:
    async with httpx.AsyncClient(timeout=30, headers=stack.headers()) as client:
        upload = await client.post(
            f"{stack.api}/v1/jobs",
            files={"file": ("brief.png", png(GERMAN))},
            data={"ocr_lang": "deu+tlh"},
        )
        url_job = await client.post(
            f"{stack.api}/v1/jobs",
            json={"url": "https://example.org/brief.pdf", "ocr_lang": "tlh"},
        )
        url_batch = await client.post(
            f"{stack.api}/v1/batches",
            json={"urls": ["https://example.org/brief.pdf"], "options": {"ocr_lang": "tlh"}},
        )
        form_batch = await client.post(
            f"{stack.api}/v1/batches",
            files=[("files", ("brief.png", png(GERMAN), "image/png"))],
            data={"ocr_lang": "tlh+eng"},
        )
        bad_syntax = await client.post(
            f"{stack.api}/v1/jobs",
            files={"file": ("brief.png", png(GERMAN))},
            data={"ocr_lang": "deu,eng"},
        )
    for response, loc in [
        (upload, ["body", "ocr_lang"]),
        (url_job, ["body", "ocr_lang"]),
        (url_batch, ["body", "options", "ocr_lang"]),
        (form_batch, ["body", "options", "ocr_lang"]),
    ]:
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc
        assert error["msg"].startswith(NOT_INSTALLED), error
        assert "deu, eng, fra" in error["msg"]
    assert bad_syntax.status_code == 422
    assert json.dumps(bad_syntax.json()).count("ocr_lang") >= 1


async def test_an_idempotency_key_reused_with_another_language_is_refused(
    stack: StackClient,
) -> None:
    key = {"Idempotency-Key": f"ocr-lang-{uuid.uuid4()}"}
    async with httpx.AsyncClient(timeout=30, headers=stack.headers()) as client:

        async def post(lang: str) -> httpx.Response:
            return await client.post(
                f"{stack.api}/v1/jobs",
                headers=key,
                files={"file": ("scan.png", png(ENGLISH))},
                data={"ocr_lang": lang, "force": "true"},
            )

        first = await post("deu")
        again = await post("deu")
        other = await post("fra")
    assert first.status_code == 202, first.text
    assert again.status_code == 200 and again.json()["job_id"] == first.json()["job_id"]
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
