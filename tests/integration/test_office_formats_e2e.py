"""Every new format through the whole running pipeline (HTTP in, sandboxed extraction, OCR,
analysis, progress, result out): text, pages and metadata in the result, the Markdown and
text exports over HTTP and the CLI, and hostile inputs that end with a reason and kill no
service."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from docpipe_cli.commands import app as cli
from tests.integration.stack_client import StackClient
from tests.unit import office_fixtures as make
from tests.unit.test_extract_office_formats import legacy_doc

pytestmark = pytest.mark.integration


async def export(stack: StackClient, job_id: str, fmt: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(
            f"{stack.api}/v1/jobs/{job_id}/result",
            params={"format": fmt},
            headers=stack.headers(),
        )


async def run_all(stack: StackClient, paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Submit every file at once; each one's final job body and result (None if it failed)."""
    jobs = await asyncio.gather(*(stack.submit_ok(p) for p in paths))
    finals = await asyncio.gather(*(stack.wait(j, timeout=120) for j in jobs))
    out: dict[str, dict[str, Any]] = {}
    for path, job, final in zip(paths, jobs, finals, strict=True):
        result = (await stack.result(job)).json() if final["status"] == "completed" else None
        out[path.name] = {"job": job, "final": final, "result": result}
    return out


async def test_every_new_format_through_the_pipeline(stack: StackClient, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    paths = [
        make.xlsx_file(tmp_path / "sales.xlsx"),
        make.pptx_file(tmp_path / "launch.pptx"),
        make.odt_file(tmp_path / "minutes.odt"),
        make.ods_file(tmp_path / "stock.ods"),
        make.odp_file(tmp_path / "tour.odp"),
        make.epub_file(tmp_path / "keeper.epub"),
        make.eml_file(tmp_path / "invoice.eml", work),
        make.rtf_file(tmp_path / "tides.rtf"),
        make.markdown_file(tmp_path / "notes.md"),
    ]
    runs = await run_all(stack, paths)
    failed = {n: r["final"] for n, r in runs.items() if r["final"]["status"] != "completed"}
    assert not failed, failed
    results = {name: run["result"] for name, run in runs.items()}
    expected = {
        # name: (format, pages, a phrase of the last page, metadata title, author)
        "sales.xlsx": ("xlsx", 2, "Ingrid Larsen\tAccountant", "Regional sales", "Finance Team"),
        "launch.pptx": ("pptx", 2, "Lighthouse\t4500", "Harbour launch", "Product Office"),
        "minutes.odt": ("odt", 1, "- Order new buoys", "Meeting minutes", "Odile Martin"),
        "stock.ods": ("ods", 2, "Nordic Marine\tBergen", "Inventory", "Odile Martin"),
        "tour.odp": ("odp", 2, "Safety rules", "Harbour tour", "Odile Martin"),
        "keeper.epub": ("epub", 3, "keeper finally slept", "The Lighthouse Keeper", "Maren Holt"),
        "invoice.eml": ("eml", 5, "Ingrid Larsen", "Invoice for March", "Clara Berg"),
        "tides.rtf": ("rtf", 1, "Café opens after low tide.", "Tide tables", "Jonas Weber"),
        "notes.md": ("md", 1, "## Known issues", "Release notes", None),
    }
    for name, (fmt, pages, phrase, title, author) in expected.items():
        result = results[name]
        assert (result["format"], result["pages_total"], len(result["pages"])) == (
            fmt,
            pages,
            pages,
        ), name
        assert phrase in result["pages"][-1]["text"], (name, result["pages"][-1])
        assert result["metadata"]["title"] == title, (name, result["metadata"])
        if author is not None:
            assert author in result["metadata"]["author"], (name, result["metadata"])
        assert result["metadata"]["page_count"] >= 1
        assert result["chunks"], f"{name}: its text was analysed"
    assert "Remind everyone about the embargo" in results["launch.pptx"]["pages"][0]["text"]
    assert results["invoice.eml"]["pages"][1]["text"].startswith("Attachment: invoice.pdf")
    assert results["sales.xlsx"]["metadata"]["created"].startswith("2024-03-05T09:30:00")
    assert results["minutes.odt"]["metadata"]["language"] == "fr-FR"

    sales = runs["sales.xlsx"]["job"]
    markdown = await export(stack, sales, "markdown")
    assert markdown.status_code == 200 and markdown.headers["content-type"].startswith(
        "text/markdown"
    )
    assert markdown.text.startswith("# Regional sales\n")
    assert "<!-- page 2 -->" in markdown.text
    assert "| Ingrid Larsen | Accountant |" in markdown.text
    assert "## Staff\n" in markdown.text, "a sheet's name is its page's heading"
    assert results["minutes.odt"]["pages"][0]["headings"] == [
        {"level": 1, "text": "Minutes of the harbour board"}
    ]
    minutes = (await export(stack, runs["minutes.odt"]["job"], "markdown")).text
    assert "\n# Minutes of the harbour board\n" in minutes and "\n- Order new buoys\n" in minutes
    deck = (await export(stack, runs["launch.pptx"]["job"], "markdown")).text
    assert "\n## Launch plan\n" in deck and "\n## Budget\n" in deck
    text = await export(stack, sales, "text")
    assert text.headers["content-type"].startswith("text/plain")
    assert "\f" in text.text and "Ingrid Larsen\tAccountant" in text.text
    assert (await export(stack, sales, "json")).json() == results["sales.xlsx"]
    assert (await export(stack, sales, "yaml")).status_code == 422

    cli_run = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["--api", stack.api, "--key", stack.key, "result", runs["notes.md"]["job"]]
        + ["--format", "markdown"],
        catch_exceptions=False,
    )
    assert cli_run.exit_code == 0, cli_run.output
    assert "<!-- page 1 -->" in cli_run.output and "## Changes" in cli_run.output
    assert not stack.stack.deaths(), f"a service process died: {stack.stack.deaths()}"


async def test_hostile_inputs_end_with_a_reason_and_kill_no_service(
    stack: StackClient, tmp_path: Path
) -> None:
    refused = {
        "bomb.xlsx": make.zip_bomb_xlsx(tmp_path / "bomb.xlsx"),
        "bomb.docx": make.zip_bomb_docx(tmp_path / "bomb.docx"),
        "nested.xlsx": make.nested_archive(tmp_path / "nested.xlsx"),
        "old.doc": legacy_doc(tmp_path / "old.doc"),
    }
    answers = await asyncio.gather(*(stack.submit(p) for p in refused.values()))
    reasons = {name: a for name, a in zip(refused, answers, strict=True)}
    for name, answer in reasons.items():
        assert answer.status_code == 415, (name, answer.text)
    assert "ZIP bomb" in reasons["bomb.xlsx"].text and "ZIP bomb" in reasons["bomb.docx"].text
    assert "not a readable Office, OpenDocument or EPUB" in reasons["nested.xlsx"].text
    assert "LibreOffice (soffice)" in reasons["old.doc"].text
    assert "not installed" in reasons["old.doc"].text

    ending = [
        make.xlsx_million_empty_rows(tmp_path / "empty-rows.xlsx"),
        make.eml_many_attachments(tmp_path / "receipts.eml"),
        make.nested_eml(tmp_path / "forwarded.eml"),
    ]
    runs = await run_all(stack, ending)
    rows = runs["empty-rows.xlsx"]
    assert rows["final"]["status"] == "completed", rows["final"]
    assert rows["result"]["pages"][0]["text"] == "Sheet1\n\nLedger\nOpening balance\t100"
    receipts = runs["receipts.eml"]["final"]
    assert receipts["status"] == "failed"
    assert "more than 50 attachments" in receipts["error"]
    forwarded = runs["forwarded.eml"]["final"]
    assert forwarded["status"] == "failed"
    assert "nested more than 3 deep" in forwarded["error"]
    assert not stack.stack.deaths(), f"a service process died: {stack.stack.deaths()}"
