"""`make demo`: start the stack (the five services and the local model server), push sample
documents through it with live progress bars fed by the WebSocket, print a summary of the
results with each job's AI analysis tokens and cost, and stop.

Samples come from the corpus (DOCPIPE_CORPUS, default ../shared/corpus) when it is there,
otherwise the demo makes its own (a text PDF, a scanned page, a DOCX, a CSV).

Every document is submitted with AI analysis by the local model (summary, classify, extract)
and a small per-job budget, so long documents stop at it and complete partial, with the
budget's sentence. Costs come from the call ledger (GET /v1/jobs/{id}/cost) at the local
model's demo price. `--builtin` submits without AI analysis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from docpipe_cli.follow import follow_jobs
from scripts.stack import Stack
from services.analyzer.llm.settings import LlmSettings
from shared.events import JobStatus
from shared.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent
CORPUS_SAMPLES = [
    "pdf_text/pypdf-crazyones.pdf",
    "pdf_text/pdfbox-eu-001.pdf",
    "pdf_text/plumber-scotus-transcript-p1.pdf",
    "pdf_scanned/tess-phototest.tif",
    "pdf_scanned/ocrmypdf-linn.pdf",
    "office/docx-mammoth-tables.docx",
    "office/html-readability-wikipedia.html",
    "office/csv-seaborn-penguins.csv",
    "bad/pypdf-r4-aes-user-password.pdf",  # encrypted: fails with a readable reason
]


# The `analysis` option of POST /v1/jobs. The budget lets each job make a few dozen calls to
# the local model (one thread, about a second a call): enough to show every task, and short
# documents finish while long ones stop at the budget.
DEMO_ANALYSIS: dict[str, Any] = {
    "backend": "llm",
    "tasks": ["summary", "classify", "extract"],
    "labels": ["contract", "letter", "report", "table", "article", "other"],
    "schema": {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "date": {"type": "string"},
            "organisation": {"type": "string"},
        },
    },
    "max_cost_usd": 0.005,
}


def sample_documents(console: Console) -> list[Path]:
    corpus = Path(os.environ.get("DOCPIPE_CORPUS", ROOT.parent / "shared" / "corpus"))
    found = [corpus / rel for rel in CORPUS_SAMPLES if (corpus / rel).exists()]
    if found:
        console.print(f"[dim]samples from the corpus at {corpus}[/dim]")
        return found
    console.print("[dim]no corpus found: making sample documents[/dim]")
    from tests.fixtures import docx_file, pdf_with_pages, text_image

    out = ROOT / "var" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    csv = out / "orders.csv"
    csv.write_text("order,customer,total\n1001,ACME,$120.00\n1002,Globex,$75.50\n")
    return [
        pdf_with_pages(
            out / "contract.pdf",
            [
                "Contract between ACME and Globex, signed on March 3, 2025.",
                "Annex: fees of €2,500.",
            ],
        ),
        pdf_with_pages(out / "scan.pdf", [text_image(["A scanned page", "read by tesseract."])]),
        docx_file(out / "letter.docx", ["Dear customer,", "write to help@example.com."]),
        csv,
    ]


async def upload(
    client: httpx.AsyncClient, api: str, key: str, path: Path, analysis: dict[str, Any] | None
) -> dict[str, Any]:
    # force: a demo run twice processes (and pays for) its documents again, rather than
    # reusing the first run's identical jobs (duplicate detection).
    form = {"force": "true"}
    if analysis is not None:
        form["analysis"] = json.dumps(analysis)
    with path.open("rb") as fh:
        response = await client.post(
            f"{api}/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (path.name, fh)},
            data=form,
        )
    if response.status_code != 202:
        return {"error": f"HTTP {response.status_code}: {response.json().get('detail')}"}
    return dict(response.json())


COLUMNS = (
    "document",
    "status",
    "pages",
    "chunks",
    "words",
    "entities",
    "AI calls",
    "tokens",
    "AI cost",
    "seconds",
    "note",
)


def usd(value: float) -> str:
    return f"${value:.6f}" if 0 < value < 0.01 else f"${value:.4f}"


def summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="docpipe demo: results", show_footer=True)
    spent = [r for r in rows if "cost_usd" in r]
    footer = {
        "document": "total",
        "AI calls": str(sum(r["AI calls"] for r in spent)),
        "tokens": str(sum(r["tokens"] for r in spent)),
        "AI cost": usd(sum(r["cost_usd"] for r in spent)),
    }
    for column in COLUMNS:
        table.add_column(column, footer=footer.get(column, ""), overflow="fold")
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in COLUMNS))
    return table


def price_caption(settings: LlmSettings) -> str:
    """Says where the AI cost comes from: the local model's demo price (made up)."""
    model = settings.model
    price = settings.prices.get(model)
    if price is None:
        return f"AI cost: no price configured for {model}."
    label = f" — {price.label}" if price.label else ""
    return (
        f"AI cost at the price of {model}: ${price.input_per_million:.2f} input, "
        f"${price.output_per_million:.2f} output, ${price.cached_input_per_million:.2f} cached "
        f"input per million tokens{label}."
    )


async def job_cost(
    client: httpx.AsyncClient, progress: str, key: str, job_id: str
) -> dict[str, Any]:
    """The job's AI calls, tokens and cost from the call ledger."""
    response = await client.get(
        f"{progress}/v1/jobs/{job_id}/cost", headers={"Authorization": f"Bearer {key}"}
    )
    if response.status_code != 200:
        return {}
    body = response.json()
    return {
        "AI calls": body["calls"],
        "tokens": body["tokens"],
        "cost_usd": body["cost_usd"],
        "AI cost": usd(body["cost_usd"]),
    }


async def result_row(
    client: httpx.AsyncClient, stack: Stack, key: str, job_id: str, name: str, final: dict[str, Any]
) -> dict[str, Any]:
    """One line of the summary: the job's outcome, its result's figures and its AI spend."""
    row: dict[str, Any] = {"document": name, "status": final.get("status", "?")}
    row |= await job_cost(client, stack.url("progress"), key, job_id)
    if final.get("status") != JobStatus.COMPLETED:
        return row | {"note": final.get("error", "")}
    result = (
        await client.get(
            f"{stack.url('ingest')}/v1/jobs/{job_id}/result",
            headers={"Authorization": f"Bearer {key}"},
        )
    ).json()
    chunks = result.get("chunks", [])
    sources = ", ".join(sorted({p["source"] for p in result.get("pages", [])}))
    # A job whose budget ran out completes partial, with the budget's sentence.
    partial = result.get("error") or final.get("error") if result.get("partial") else None
    return row | {
        "pages": len(result.get("pages", [])),
        "chunks": len(chunks),
        "words": sum(c["analysis"].get("word_count", 0) for c in chunks),
        "entities": sum(len(c["analysis"].get("entities", [])) for c in chunks),
        "seconds": (result.get("timings") or {}).get("processing_seconds", ""),
        "note": f"{sources}; partial: {partial}" if partial else sources,
    }


async def main(analysis: dict[str, Any] | None) -> int:
    # Without a terminal (CI logs, pipes) rich would wrap the summary table at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 150)
    # The demo runs a development stack (scripts/stack.py): its development keys too.
    os.environ.setdefault("DOCPIPE_ENV", "dev")
    settings = get_settings()
    key = next(iter(settings.tenants_by_key))
    log_dir = ROOT / "var" / "log"
    stack = Stack(log_dir=log_dir)
    console.print(
        f"[bold]Starting the five services and the local model server[/bold] (logs in {log_dir})"
    )
    await stack.start()
    try:
        await stack.wait_ready(120)
        api, ws = stack.url("ingest"), stack.url("progress").replace("http://", "ws://")
        docs = sample_documents(console)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=60) as client:
            accepted = await asyncio.gather(*(upload(client, api, key, p, analysis) for p in docs))
            jobs = {
                a["job_id"]: p.name for a, p in zip(accepted, docs, strict=True) if "job_id" in a
            }
            finals = await follow_jobs(ws, key, jobs, console, api_url=api)
            rows = [
                await result_row(client, stack, key, job_id, name, finals.get(job_id, {}))
                for job_id, name in jobs.items()
            ]
            for a, p in zip(accepted, docs, strict=True):
                if "error" in a:
                    rows.append({"document": p.name, "status": "refused", "note": a["error"]})
        console.print(summary_table(rows))
        console.print(price_caption(LlmSettings()))
        console.print(f"{len(rows)} documents in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        await stack.stop()
        console.print("[dim]stack stopped[/dim]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.demo", description="make demo")
    parser.add_argument(
        "--builtin",
        action="store_true",
        help="submit without AI analysis (the built-in analyzer only)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(None if parse_args().builtin else DEMO_ANALYSIS)))
