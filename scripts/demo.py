"""`make demo`: start the stack, push sample documents through it with live progress bars fed by
the WebSocket, print a summary of the results, and stop.

Samples come from the corpus (DOCPIPE_CORPUS, default ../shared/corpus) when it is there,
otherwise the demo makes its own (a text PDF, a scanned page, a DOCX, a CSV).
"""

from __future__ import annotations

import asyncio
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


async def upload(client: httpx.AsyncClient, api: str, key: str, path: Path) -> dict[str, Any]:
    with path.open("rb") as fh:
        response = await client.post(
            f"{api}/v1/jobs",
            headers={"Authorization": f"Bearer {key}"},
            files={"file": (path.name, fh)},
        )
    if response.status_code != 202:
        return {"error": f"HTTP {response.status_code}: {response.json().get('detail')}"}
    return dict(response.json())


def summary_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="docpipe demo: results")
    for column in ("document", "status", "pages", "chunks", "words", "entities", "seconds", "note"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            *(
                str(row.get(c, ""))
                for c in (
                    "document",
                    "status",
                    "pages",
                    "chunks",
                    "words",
                    "entities",
                    "seconds",
                    "note",
                )
            )
        )
    return table


async def main() -> int:
    # Without a terminal (CI logs, pipes) rich would wrap the summary table at 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 150)
    settings = get_settings()
    key = next(iter(settings.tenants_by_key))
    log_dir = ROOT / "var" / "log"
    stack = Stack(log_dir=log_dir)
    console.print(f"[bold]Starting the five services[/bold] (logs in {log_dir})")
    await stack.start()
    try:
        await stack.wait_ready(120)
        api, ws = stack.url("ingest"), stack.url("progress").replace("http://", "ws://")
        docs = sample_documents(console)
        started = time.monotonic()
        async with httpx.AsyncClient(timeout=60) as client:
            accepted = await asyncio.gather(*(upload(client, api, key, p) for p in docs))
            jobs = {
                a["job_id"]: p.name for a, p in zip(accepted, docs, strict=True) if "job_id" in a
            }
            finals = await follow_jobs(ws, key, jobs, console, api_url=api)
            rows = []
            for (job_id, name), final in ((j, finals.get(j[0], {})) for j in jobs.items()):
                row: dict[str, Any] = {"document": name, "status": final.get("status", "?")}
                if final.get("status") == JobStatus.COMPLETED:
                    result = (
                        await client.get(
                            f"{api}/v1/jobs/{job_id}/result",
                            headers={"Authorization": f"Bearer {key}"},
                        )
                    ).json()
                    chunks = result.get("chunks", [])
                    row |= {
                        "pages": len(result.get("pages", [])),
                        "chunks": len(chunks),
                        "words": sum(c["analysis"]["word_count"] for c in chunks),
                        "entities": sum(len(c["analysis"]["entities"]) for c in chunks),
                        "seconds": (result.get("timings") or {}).get("processing_seconds", ""),
                        "note": ", ".join(sorted({p["source"] for p in result.get("pages", [])})),
                    }
                else:
                    row["note"] = final.get("error", "")
                rows.append(row)
            for a, p in zip(accepted, docs, strict=True):
                if "error" in a:
                    rows.append({"document": p.name, "status": "refused", "note": a["error"]})
        console.print(summary_table(rows))
        console.print(f"{len(rows)} documents in {time.monotonic() - started:.1f} s")
        return 0
    finally:
        await stack.stop()
        console.print("[dim]stack stopped[/dim]")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
