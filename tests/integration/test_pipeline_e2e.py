"""The whole pipeline, end to end, through the HTTP API and the WebSocket, on the real stack."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.fixtures import docx_file, pdf_with_pages, text_image
from tests.integration.stack_client import StackClient, publish_as_upstream

pytestmark = pytest.mark.integration

PAGE_TEXTS = [
    "Invoice 2024-117 for ACME Corporation.\nContact billing@acme.example or +1 415 555 0100.\n"
    "The total due is $1,250.00 by March 3, 2025.",
    "Second page of the contract.\nDelivery terms are described in the annex.\n"
    "Payment is expected within thirty days.",
]
SCAN_LINES = ["The quick brown fox jumps", "over the lazy dog near", "the river bank today."]


@pytest.fixture(scope="module")
def mixed_pdf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "mixed.pdf"
    return pdf_with_pages(path, [PAGE_TEXTS[0], text_image(SCAN_LINES), PAGE_TEXTS[1]])


async def test_mixed_pdf_completes_with_text_and_ocr_pages(
    stack: StackClient, mixed_pdf: Path
) -> None:
    job_id = await stack.submit_ok(mixed_pdf)
    final = await stack.wait(job_id)
    assert final["status"] == "completed", final
    assert final["percent"] == 100
    result = (await stack.result(job_id)).json()
    pages = result["pages"]
    assert [p["number"] for p in pages] == [1, 2, 3]
    assert [p["source"] for p in pages] == ["text-layer", "ocr", "text-layer"]
    assert "ACME Corporation" in pages[0]["text"]
    assert "quick brown fox" in pages[1]["text"].replace("\n", " ")
    assert "annex" in result["text"]
    chunks = result["chunks"]
    assert chunks, "a completed job has chunks"
    for chunk in chunks:
        page = pages[chunk["page"] - 1]
        source_text = (
            page["text"] if chunk["source"] == page["source"] else page.get("ocr_text", "")
        )
        assert source_text[chunk["start"] : chunk["end"]] == chunk["text"]
        assert chunk["analysis"]["word_count"] > 0
    kinds = {e["kind"] for c in chunks for e in c["analysis"]["entities"]}
    assert {"email", "money", "phone", "date"} <= kinds


async def test_websocket_progress_rules(stack: StackClient, mixed_pdf: Path) -> None:
    job_id = await stack.submit_ok(mixed_pdf)
    messages = await stack.watch(job_id)
    seqs = [m["seq"] for m in messages]
    assert seqs == sorted(set(seqs)), f"seq must strictly increase: {seqs}"
    percents = [m["percent"] for m in messages]
    assert percents == sorted(percents), f"percent went backwards: {percents}"
    assert all(m["percent"] < 100 for m in messages if m["status"] != "completed")
    last = messages[-1]
    assert last["status"] == "completed" and last["percent"] == 100
    assert last["pages_done"] == last["pages_total"] == 3
    assert {"extract", "ocr", "analyze"} <= set(last["stages"])
    # A client that reconnects after a seq it saw gets exactly the rest.
    middle = seqs[len(seqs) // 2] if len(seqs) > 1 else 0
    again = await stack.watch(job_id, after=middle)
    assert [m["seq"] for m in again] == [s for s in seqs if s > middle]
    # Polling clients get the same final snapshot.
    import httpx

    async with httpx.AsyncClient() as client:
        polled = (
            await client.get(
                f"{stack.stack.url('progress')}/v1/jobs/{job_id}/progress", headers=stack.headers()
            )
        ).json()
    assert polled["status"] == "completed" and polled["seq"] == last["seq"]


async def test_docx_and_text_formats(stack: StackClient, tmp_path: Path) -> None:
    docx = docx_file(tmp_path / "letter.docx", ["Dear customer,", "Your order 7781 has shipped."])
    txt = tmp_path / "notes.txt"
    txt.write_bytes("Café déjà vu — naïve façade.\nSecond line.".encode("latin-1", "replace"))
    csv = tmp_path / "table.csv"
    csv.write_text("name,city,amount\nAlice,Paris,10\nBob,Berlin,20\nCarol,Rome,30\n")
    jobs = {p.name: await stack.submit_ok(p) for p in (docx, txt, csv)}
    finals = {name: await stack.wait(job) for name, job in jobs.items()}
    assert all(f["status"] == "completed" for f in finals.values()), finals
    docx_text = (await stack.result(jobs["letter.docx"])).json()["text"]
    assert "order 7781 has shipped" in docx_text
    csv_text = (await stack.result(jobs["table.csv"])).json()["text"]
    assert "Berlin" in csv_text and "city" in csv_text


async def test_result_is_409_until_completed_and_other_tenants_get_404(
    stack: StackClient, mixed_pdf: Path
) -> None:
    job_id = await stack.submit_ok(mixed_pdf)
    early = await stack.result(job_id)
    other = await stack.job(job_id, key=stack.other_key)
    assert other.status_code == 404
    final = await stack.wait(job_id)
    assert final["status"] == "completed"
    if early.status_code != 200:  # the job may, rarely, already be done
        assert early.status_code == 409


async def test_upload_published_straight_to_the_bus(
    stack: StackClient, test_settings: Settings, tmp_path: Path
) -> None:
    doc = pdf_with_pages(tmp_path / "direct.pdf", ["Published straight onto the exchange."])
    tenant = test_settings.tenants_by_key[stack.key]
    event = DocumentUploaded(
        job_id=uuid.uuid4(),
        tenant=tenant,
        document_uri=doc.resolve().as_uri(),
        filename="direct.pdf",
    )
    await publish_as_upstream(test_settings, event)
    final = await stack.wait(str(event.job_id))
    assert final["status"] == "completed", final
    assert "straight onto the exchange" in (await stack.result(str(event.job_id))).json()["text"]


async def test_unsupported_and_empty_uploads_are_refused(stack: StackClient) -> None:
    refused = await stack.submit(data=b"\x00\x01\x02binary junk" * 50, name="looks-like.pdf")
    assert refused.status_code == 415, refused.text
    empty = await stack.submit(data=b"", name="empty.pdf")
    assert empty.status_code in (400, 422)
    unauthenticated = await stack.submit(data=b"%PDF-1.4", name="x.pdf", key="wrong-key")
    assert unauthenticated.status_code == 401


async def test_many_jobs_concurrently_all_complete(stack: StackClient, tmp_path: Path) -> None:
    paths = [
        pdf_with_pages(tmp_path / f"doc{i}.pdf", [f"Document number {i}. " + PAGE_TEXTS[i % 2]])
        for i in range(8)
    ]
    jobs = await asyncio.gather(*(stack.submit_ok(p) for p in paths))
    finals = await asyncio.gather(*(stack.wait(j) for j in jobs))
    assert [f["status"] for f in finals] == ["completed"] * len(paths)
    for i, job in enumerate(jobs):
        text = (await stack.result(job)).json()["text"]
        assert f"Document number {i}." in text
    assert not stack.stack.deaths(), f"a service process died: {stack.stack.deaths()}"
    json.dumps(finals)  # the API answers plain JSON
