"""Each corpus category through the whole running pipeline via the HTTP API.

Quality floor: word recall >= 0.95 on every text PDF with a reference (PDFBOX-3127-VFont is
reported, not asserted) and CER <= 0.02 / 0.09 on the two Tesseract test scans.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack_client import StackClient
from tests.quality import cer, word_recall

pytestmark = [pytest.mark.integration, pytest.mark.corpus]

RECALL_FLOOR = 0.95
RECALL_REPORTED_ONLY = {"pdfbox-PDFBOX-3127-VFont"}
CER_CEILING = {"tess-phototest.tif": 0.02, "tess-8087_054.3B.tif": 0.09}
# Not in the floor; measured and held so a regression shows.
CER_CEILING_SCANNED_PDF = {"ocrmypdf-linn.pdf": 0.15, "ocrmypdf-linn.png": 0.15}
PASSWORDS = {
    "samples-libreoffice-writer-password.pdf": "openpassword",
    "pypdf-r4-aes-user-password.pdf": "asdfzxcv",
}


async def run_all(stack: StackClient, paths: list[Path], **kw: Any) -> dict[str, dict[str, Any]]:
    """Submit every file at once, wait for all, and return name -> {final, result}."""
    jobs = await asyncio.gather(*(stack.submit_ok(p, **kw) for p in paths))
    finals = await asyncio.gather(*(stack.wait(j, timeout=300) for j in jobs))
    out: dict[str, dict[str, Any]] = {}
    for path, job, final in zip(paths, jobs, finals, strict=True):
        result = (await stack.result(job)).json() if final["status"] == "completed" else None
        out[path.name] = {"job_id": job, "final": final, "result": result}
    return out


async def test_text_pdfs_meet_the_word_recall_floor(stack: StackClient, corpus: Path) -> None:
    pdfs = sorted(p for p in (corpus / "pdf_text").glob("*.pdf"))
    runs = await run_all(stack, pdfs)
    failures = []
    for pdf in pdfs:
        run = runs[pdf.name]
        assert run["final"]["status"] == "completed", (pdf.name, run["final"])
        reference = pdf.with_suffix(".expected.txt")
        if not reference.exists():
            assert run["result"]["pages"], pdf.name
            continue
        recall = word_recall(reference.read_text(errors="replace"), run["result"]["text"])
        print(f"word recall {pdf.stem}: {recall:.3f}")
        if pdf.stem not in RECALL_REPORTED_ONLY and recall < RECALL_FLOOR:
            failures.append((pdf.stem, round(recall, 3)))
    assert not failures, f"below the {RECALL_FLOOR} word-recall floor: {failures}"


async def test_scans_meet_the_character_error_rate_ceiling(
    stack: StackClient, corpus: Path
) -> None:
    scans = corpus / "pdf_scanned"
    ceilings = {**CER_CEILING, **CER_CEILING_SCANNED_PDF}
    paths = [scans / name for name in ceilings]
    runs = await run_all(stack, paths)
    for path in paths:
        run = runs[path.name]
        assert run["final"]["status"] == "completed", (path.name, run["final"])
        assert {p["source"] for p in run["result"]["pages"]} == {"ocr"}
        # The linn PDF and PNG are the same page, sharing one reference.
        truth = (
            path.with_suffix(".expected.txt")
            if path.suffix == ".tif"
            else (scans / "ocrmypdf-linn.expected.txt")
        )
        rate = cer(truth.read_text(), run["result"]["text"])
        print(f"CER {path.name}: {rate:.4f}")
        assert rate <= ceilings[path.name], f"{path.name}: CER {rate:.4f} > {ceilings[path.name]}"


async def test_office_formats(stack: StackClient, corpus: Path) -> None:
    office = sorted(p for p in (corpus / "office").iterdir() if ".expected." not in p.name)
    runs = await run_all(stack, office)
    for path in office:
        run = runs[path.name]
        assert run["final"]["status"] == "completed", (path.name, run["final"])
        text = run["result"]["text"]
        assert text.strip(), f"{path.name}: empty text"
        assert run["result"]["chunks"], f"{path.name}: no chunks"
    alice = runs["txt-snappy-alice29.txt"]["result"]["text"]
    assert word_recall((corpus / "office/txt-snappy-alice29.txt").read_text(), alice) > 0.99
    titanic = runs["csv-seaborn-titanic.csv"]["result"]["text"]
    assert "survived" in titanic and "embark_town" in titanic, "CSV header kept"
    wiki = runs["html-readability-wikipedia.html"]["result"]["text"]
    import lxml.html

    expected_main = lxml.html.fromstring(
        (corpus / "office/html-readability-wikipedia.expected.html").read_bytes()
    ).text_content()
    recall = word_recall(expected_main, wiki)
    print(f"HTML main-text recall vs readability: {recall:.3f}")
    assert recall > 0.8
    assert "Jump to navigation" not in wiki


async def test_bad_files_fail_cleanly_and_block_nothing(
    stack: StackClient, corpus: Path, tmp_path: Path
) -> None:
    from tests.fixtures import pdf_with_pages

    good = pdf_with_pages(tmp_path / "good.pdf", ["A good document submitted among bad ones."])
    bad = sorted((corpus / "bad").iterdir())
    responses = await asyncio.gather(*(stack.submit(p) for p in bad))
    good_job = await stack.submit_ok(good)
    outcomes: dict[str, str] = {}
    waits = []
    for path, response in zip(bad, responses, strict=True):
        if response.status_code == 202:
            waits.append((path.name, response.json()["job_id"]))
        else:
            assert 400 <= response.status_code < 500, (path.name, response.status_code)
            detail = response.json().get("detail")
            assert isinstance(detail, str) and len(detail) > 10, (path.name, detail)
            outcomes[path.name] = f"refused {response.status_code}: {detail}"
    finals = await asyncio.gather(*(stack.wait(job, timeout=300) for _, job in waits))
    for (name, _job), final in zip(waits, finals, strict=True):
        assert final["status"] in ("completed", "failed"), (name, final)
        if final["status"] == "failed":
            reason = final.get("error") or ""
            assert len(reason) > 15 and reason[0].isupper(), (name, reason)
            assert "Traceback" not in reason
        outcomes[name] = f"{final['status']}: {final.get('error') or ''}"
    for name, outcome in sorted(outcomes.items()):
        print(f"{name}: {outcome}")
    for name in PASSWORDS:
        if name in outcomes:
            assert outcomes[name].startswith("failed"), (name, outcomes[name])
    assert (await stack.wait(good_job))["status"] == "completed"
    assert not stack.stack.deaths(), f"a service process died: {stack.stack.deaths()}"


async def test_encrypted_pdfs_open_with_their_password(stack: StackClient, corpus: Path) -> None:
    for name, password in PASSWORDS.items():
        job = await stack.submit_ok(corpus / "bad" / name, password=password)
        final = await stack.wait(job)
        assert final["status"] == "completed", (name, final)
        wrong = await stack.submit_ok(corpus / "bad" / name, password="not-the-password")
        final_wrong = await stack.wait(wrong)
        assert final_wrong["status"] == "failed"
        assert "password" in final_wrong["error"].lower()
