"""The `docpipe` command: submit, status, result and cancel over the ingest API (and the
`dlq` group, docpipe_cli/dlq.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from docpipe_cli.batch import BatchFollowError, batch_summary, follow_batch
from docpipe_cli.dlq import dlq_app
from docpipe_cli.follow import follow_jobs
from docpipe_cli.keys import keys_app
from docpipe_cli.views import (
    console,
    detail_of,
    err_console,
    fail,
    http_error_message,
    result_lines,
    summarize_result,
    summary_table,
)
from shared.events import JobStatus, OcrMode

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_WS = "ws://127.0.0.1:8001"
DEFAULT_KEY = "dev-key"

app = typer.Typer(
    name="docpipe",
    help="Submit documents to docpipe and follow their processing.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(dlq_app)
app.add_typer(keys_app)


@dataclass(frozen=True)
class Config:
    api: str
    ws: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def _cfg(ctx: typer.Context) -> Config:
    cfg: Config = ctx.obj
    return cfg


def _client(cfg: Config, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=cfg.api, headers={**cfg.headers, **(headers or {})}, timeout=120)


def _request(cfg: Config, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        with _client(cfg) as client:
            return client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise fail(f"Cannot reach the docpipe API at {cfg.api}: {exc}") from None


# Attempts per upload: a connection reset or a timeout is retried, never a refusal.
UPLOAD_ATTEMPTS = 3


def upload(cfg: Config, path: Path, form: dict[str, str]) -> httpx.Response:
    """POST one document. It carries an Idempotency-Key, so after a transport error (reset,
    timeout: the upload may or may not have been taken) it is sent again with the same key,
    and the API answers with the job it already has instead of starting a second one."""
    key = {"Idempotency-Key": uuid.uuid4().hex}
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(httpx.TransportError),
            stop=stop_after_attempt(UPLOAD_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4),
            reraise=True,
        ):
            with attempt, path.open("rb") as fh, _client(cfg, key) as client:
                return client.post("/v1/jobs", files={"file": (path.name, fh)}, data=form)
    except httpx.TransportError as exc:
        raise fail(f"Cannot reach the docpipe API at {cfg.api}: {exc}") from None
    raise AssertionError("unreachable: the last attempt returns or raises")


@app.callback()
def options(
    ctx: typer.Context,
    api: Annotated[
        str, typer.Option(envvar="DOCPIPE_API_URL", help="Base URL of the ingest API.")
    ] = DEFAULT_API,
    ws: Annotated[
        str, typer.Option(envvar="DOCPIPE_WS_URL", help="Base URL of the progress WebSocket.")
    ] = DEFAULT_WS,
    key: Annotated[str, typer.Option(envvar="DOCPIPE_API_KEY", help="API key.")] = DEFAULT_KEY,
) -> None:
    ctx.obj = Config(api.rstrip("/"), ws.rstrip("/"), key)


def documents_in(paths: list[Path]) -> list[Path]:
    """The files named, with each folder replaced by the files in it (sorted, hidden ones
    and subfolders left out)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def parse_labels(pairs: list[str]) -> dict[str, str]:
    """`["project=alpha"]` -> {"project": "alpha"}."""
    labels: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"The label {pair!r} is not key=value (for example project=alpha).")
        labels[key] = value
    return labels


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[
        list[Path],
        typer.Argument(exists=True, readable=True, help="Documents, or folders of documents."),
    ],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show live progress.")] = False,
    batch: Annotated[
        bool, typer.Option("--batch", "-b", help="Submit all the documents as one batch.")
    ] = False,
    name: Annotated[str | None, typer.Option(help="The batch's name (with --batch).")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="key=value; may be repeated.")
    ] = None,
    ocr: Annotated[OcrMode, typer.Option(help="When to OCR pages.")] = OcrMode.AUTO,
    ocr_lang: Annotated[
        str | None,
        typer.Option(help="OCR languages, e.g. deu+eng (default: the deployment's)."),
    ] = None,
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 (default) to 9.")] = 0,
    password: Annotated[str | None, typer.Option(help="Password of encrypted PDFs.")] = None,
    docx_comments: Annotated[
        bool, typer.Option("--docx-comments", help="Read Word documents' comments too.")
    ] = False,
    pdf_tables: Annotated[
        bool | None,
        typer.Option(help="Find PDFs' ruled tables (default: the deployment's setting)."),
    ] = None,
) -> None:
    """Upload documents; print their job ids (and follow them with --follow). With --batch,
    they are one batch, followed with one overall bar."""
    cfg = _cfg(ctx)
    paths = documents_in(files)
    if not paths:
        raise fail("There are no documents to submit.")
    form = {"ocr": ocr.value, "priority": str(priority)}
    tables = None if pdf_tables is None else str(pdf_tables).lower()
    labels = parse_labels(label or [])
    given = {
        "ocr_lang": ocr_lang,
        "password": password,
        "pdf_tables": tables,
        "docx_comments": "true" if docx_comments else None,
        "labels": json.dumps(labels) if labels else None,
    }
    form.update({key: value for key, value in given.items() if value is not None})
    if batch:
        submit_batch(cfg, paths, form, name, follow)
        return
    jobs, refused = upload_each(cfg, paths, form)
    if follow and jobs:
        finals = asyncio.run(follow_jobs(cfg.ws, cfg.key, jobs, console, api_url=cfg.api))
        console.print(summary_table(jobs, finals))
        if any(f.get("status") != JobStatus.COMPLETED for f in finals.values()):
            raise typer.Exit(1)
    if refused:
        raise typer.Exit(1)


def upload_each(cfg: Config, paths: list[Path], form: dict[str, str]) -> tuple[dict[str, str], int]:
    """Upload each document as a job, printing its id (or why it was refused); returns the
    jobs (id -> file name) and how many were refused."""
    jobs: dict[str, str] = {}
    refused = 0
    for path in paths:
        response = upload(cfg, path, form)
        if response.status_code in (200, 202):
            job_id = str(response.json()["job_id"])
            jobs[job_id] = path.name
            console.print(f"{job_id}  {path.name}")
        else:
            refused += 1
            err_console.print(f"[red]refused[/red] {path.name}: {http_error_message(response)}")
    return jobs, refused


def submit_batch(
    cfg: Config, paths: list[Path], form: dict[str, str], name: str | None, follow: bool
) -> None:
    """POST /v1/batches with every document; print the batch id and each job id, then (with
    follow) the batch's bars until it ends. Exit status 1 unless every document completed."""
    fields = {**form, **({"name": name} if name else {})}
    with contextlib.ExitStack() as stack:
        parts = [("files", (path.name, stack.enter_context(path.open("rb")))) for path in paths]
        response = _request(cfg, "POST", "/v1/batches", files=parts, data=fields)
    if response.status_code != 202:
        raise fail(http_error_message(response))
    body = response.json()
    batch_id = str(body["batch_id"])
    labels = {str(j["job_id"]): str(j.get("filename") or j["job_id"]) for j in body["jobs"]}
    console.print(f"batch {batch_id}  {len(labels)} documents")
    for job_id, filename in labels.items():
        console.print(f"{job_id}  {filename}")
    if not follow:
        return
    try:
        state = asyncio.run(
            follow_batch(cfg.ws, cfg.key, batch_id, labels, console, title=name or "batch")
        )
    except BatchFollowError as exc:
        raise fail(f"Could not follow batch {batch_id}: {exc}") from None
    console.print(batch_summary(state))
    if state.failed():
        raise typer.Exit(1)


def _job_or_exit(cfg: Config, response: httpx.Response, job: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise fail(http_error_message(response, job))
    return dict(response.json())


@app.command()
def status(ctx: typer.Context, job: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Show a job's status."""
    cfg = _cfg(ctx)
    body = _job_or_exit(cfg, _request(cfg, "GET", f"/v1/jobs/{job}"), job)
    table = Table(show_header=False, box=None)
    for field in (
        "job_id", "status", "stage", "percent", "filename", "format", "ocr", "priority",
        "pages_total", "stalled", "partial", "error", "created_at", "updated_at", "finished_at",
        "batch_id", "labels",
    ):  # fmt: skip
        value = body.get(field)
        if value is not None and value != {}:
            table.add_row(f"[bold]{field}[/bold]", str(value))
    console.print(table)


class ResultExport(StrEnum):
    """What `docpipe result --format` asks the API for."""

    MARKDOWN = "markdown"
    TEXT = "text"
    JSON = "json"


@app.command()
def result(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result JSON.")] = False,
    export: Annotated[
        ResultExport | None,
        typer.Option(
            "--format",
            help="Print the result exported as markdown, text or json (as the API renders it).",
        ),
    ] = None,
) -> None:
    """Show a completed job's result: a summary, everything with --json, or the document
    exported with --format markdown|text|json."""
    cfg = _cfg(ctx)
    params = {"format": export.value} if export is not None else None
    response = _request(cfg, "GET", f"/v1/jobs/{job}/result", params=params)
    if response.status_code == 409:
        raise fail(detail_of(response))
    if export is not None and export is not ResultExport.JSON:
        if response.status_code != 200:
            raise fail(http_error_message(response, job))
        typer.echo(response.text, nl=False)
        return
    body = _job_or_exit(cfg, response, job)
    if export is ResultExport.JSON:
        as_json = True
    if as_json:
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    for line in result_lines(summarize_result(body)):
        console.print(line, highlight=False)


@app.command()
def cancel(ctx: typer.Context, job: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Cancel a queued or running job."""
    cfg = _cfg(ctx)
    response = _request(cfg, "POST", f"/v1/jobs/{job}/cancel")
    if response.status_code == 202:
        console.print(f"Cancelled {job}.")
    elif response.status_code == 200:
        console.print(f"{job} was already cancelled.")
    else:
        raise fail(http_error_message(response, job))


def main() -> None:
    app()
