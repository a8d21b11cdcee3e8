"""`docpipe`: submit documents, follow them live, read their status and results, cancel them.

    docpipe submit report.pdf scan.tif --follow
    docpipe status <job>      docpipe result <job> [--json]      docpipe cancel <job>

The live view is fed by the progress service's WebSocket; a dropped connection is resumed with
?after=<last seq>, so no update is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
import websockets
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
)
from rich.table import Table
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_WS = "ws://127.0.0.1:8001"
DEFAULT_KEY = "dev-key"
TERMINAL = frozenset({"completed", "failed", "cancelled"})
# Close codes after which reconnecting cannot help (policy violation, app-level 4xx).
FATAL_CLOSE_CODES = frozenset({1008, 4001, 4003, 4004, 4400, 4401, 4403, 4404})
MAX_CONNECT_FAILURES = 20
# A quiet WebSocket for this long makes the follower check the job over HTTP.
IDLE_POLL_SECONDS = 5.0

app = typer.Typer(
    name="docpipe",
    help="Submit documents to docpipe and follow their processing.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


@dataclass(frozen=True)
class Config:
    api: str
    ws: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


# --- pure helpers ---------------------------------------------------------------------------


def detail_of(response: httpx.Response) -> str:
    """The API's `detail`, flattened to one line (FastAPI's 422 details are lists)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail) if detail is not None else json.dumps(body)[:300]


def http_error_message(response: httpx.Response, what: str = "") -> str:
    """A sentence for an error response, naming the fix where there is an obvious one."""
    code = response.status_code
    subject = f" {what}" if what else ""
    if code == 401:
        return "The API key was refused (401): pass --key or set DOCPIPE_API_KEY."
    if code == 403:
        return f"Not allowed (403): {detail_of(response)}"
    if code == 404:
        return f"No such job{subject} (404): it does not exist or belongs to another tenant."
    return f"HTTP {code}{subject}: {detail_of(response)}"


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def is_final(snapshot: dict[str, Any]) -> bool:
    return bool(snapshot.get("final")) or snapshot.get("status") in TERMINAL


def apply_update(snapshot: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    """Fold one WebSocket message into the job's snapshot; older updates (seq not newer, as
    after a reconnect) change nothing."""
    seq, last = message.get("seq"), snapshot.get("seq")
    if isinstance(seq, int) and isinstance(last, int) and 0 < seq <= last:
        return snapshot
    return {**snapshot, **message}


def chunks_of(snapshot: dict[str, Any]) -> int | None:
    analyze = (snapshot.get("stages") or {}).get("analyze") or {}
    total = analyze.get("total")
    return total if isinstance(total, int) else None


def pages_text(snapshot: dict[str, Any]) -> str:
    done, total = snapshot.get("pages_done"), snapshot.get("pages_total")
    if total is None:
        return f"{done} pages" if done else ""
    return f"{done or 0}/{total} pages"


def describe(label: str, snapshot: dict[str, Any]) -> str:
    stage = snapshot.get("stage") or snapshot.get("status") or "connecting"
    if snapshot.get("stalled") and not is_final(snapshot):
        stage += " (stalled)"
    return f"{label} [dim]{stage}[/dim]"


def events_url(ws_base: str, job_id: str, key: str, after: int | None = None) -> str:
    url = f"{ws_base.rstrip('/')}/v1/jobs/{job_id}/events?token={quote(key, safe='')}"
    return f"{url}&after={after}" if after else url


def summarize_result(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a result document."""
    pages = result.get("pages") or []
    chunks = result.get("chunks") or []
    entities: Counter[str] = Counter()
    words = 0
    for chunk in chunks:
        analysis = chunk.get("analysis") or {}
        words += int(analysis.get("word_count") or 0)
        entities.update(e.get("kind", "?") for e in analysis.get("entities") or [])
    text = result.get("text")
    chars = len(text) if isinstance(text, str) else sum(len(p.get("text") or "") for p in pages)
    return {
        "pages": len(pages) if pages else result.get("pages_total"),
        "chars": chars,
        "chunks": len(chunks),
        "words": words,
        "entities": dict(sorted(entities.items())),
        "failed_pages": len(result.get("failed_pages") or []),
        "partial": bool(result.get("partial")),
    }


# --- following jobs over the WebSocket ------------------------------------------------------


async def follow_job(
    ws_base: str,
    key: str,
    job_id: str,
    on_update: Callable[[dict[str, Any]], None] = lambda _s: None,
    *,
    max_failures: int = MAX_CONNECT_FAILURES,
    poll: Callable[[], Awaitable[dict[str, Any] | None]] | None = None,
    idle_seconds: float = IDLE_POLL_SECONDS,
) -> dict[str, Any]:
    """Follow one job until its final snapshot, reconnecting with ?after=<last seq>.

    `poll` (e.g. GET /v1/jobs/{id}) is the safety net: asked while the WebSocket cannot be
    reached or has been quiet for `idle_seconds`, it notices a job that ended unannounced.
    """
    snapshot: dict[str, Any] = {"job_id": job_id}
    failures = 0

    async def polled_final() -> bool:
        nonlocal snapshot
        if poll is None:
            return False
        with contextlib.suppress(httpx.HTTPError, ValueError):
            view = await poll()
            if view and is_final(view):
                snapshot = {**snapshot, **{k: v for k, v in view.items() if k != "seq"}}
                on_update(snapshot)
                return True
        return False

    while True:
        last = snapshot.get("seq")
        url = events_url(ws_base, job_id, key, last if isinstance(last, int) else None)
        try:
            async with websockets.connect(url, open_timeout=10) as conn:
                failures = 0
                while True:
                    try:
                        raw = await asyncio.wait_for(conn.recv(), idle_seconds)
                    except TimeoutError:
                        if await polled_final():
                            return snapshot
                        continue
                    try:
                        message = json.loads(raw)
                    except ValueError:
                        continue
                    if not isinstance(message, dict):
                        continue
                    updated = apply_update(snapshot, message)
                    if updated is snapshot:
                        continue  # a replay of what we already have
                    snapshot = updated
                    on_update(snapshot)
                    if is_final(snapshot):
                        return snapshot
        except ConnectionClosed as exc:
            # A clean close before the end, or a drop: resume with ?after=, unless refused.
            code = exc.rcvd.code if exc.rcvd else None
            if code in FATAL_CLOSE_CODES:
                reason = exc.rcvd.reason if exc.rcvd else ""
                return {**snapshot, "status": "unknown", "error": reason or f"closed ({code})"}
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                return {**snapshot, "status": "unknown", "error": f"WebSocket refused ({status})"}
            failures += 1
        except InvalidURI as exc:
            return {**snapshot, "status": "unknown", "error": str(exc)}
        except (OSError, TimeoutError, websockets.WebSocketException):
            failures += 1
        if failures and await polled_final():
            return snapshot
        if failures >= max_failures:
            return {
                **snapshot,
                "status": snapshot.get("status") or "unknown",
                "error": "Lost the connection to the progress service.",
            }
        await asyncio.sleep(min(0.25 * 2 ** min(failures, 4), 3.0))


async def follow_jobs(
    ws_url: str,
    key: str,
    jobs: dict[str, str],
    console: Console,
    *,
    api_url: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Show a progress bar per job (label = jobs[job_id]) until every job is final; returns
    each job's final snapshot, with `seconds` it was followed for. With `api_url`, the job is
    also checked over HTTP while the WebSocket is unreachable or quiet."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[pages]}"),
        TextColumn("[cyan]{task.fields[eta]}"),
    )
    started = time.monotonic()
    with Progress(*columns, console=console) as progress:
        tasks = {
            job_id: progress.add_task(describe(label, {}), total=100, pages="", eta="")
            for job_id, label in jobs.items()
        }

        def updater(job_id: str) -> Callable[[dict[str, Any]], None]:
            def update(snapshot: dict[str, Any]) -> None:
                final = is_final(snapshot)
                progress.update(
                    tasks[job_id],
                    description=describe(jobs[job_id], snapshot),
                    completed=float(snapshot.get("percent") or 0),  # 100 only when completed
                    pages=pages_text(snapshot),
                    eta="" if final else format_eta(snapshot.get("eta_seconds")),
                )

            return update

        async def one(job_id: str) -> tuple[str, dict[str, Any]]:
            async def poll() -> dict[str, Any] | None:
                if api_url is None:
                    return None
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.get(
                        f"{api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
                    )
                return dict(r.json()) if r.status_code == 200 else None

            final = await follow_job(ws_url, key, job_id, updater(job_id), poll=poll)
            updater(job_id)({**final, "final": True})
            return job_id, {**final, "seconds": round(time.monotonic() - started, 1)}

        finals = await asyncio.gather(*(one(job_id) for job_id in jobs))
    return dict(finals)


def summary_table(jobs: dict[str, str], finals: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="docpipe jobs")
    for column in ("document", "job", "status", "pages", "chunks", "seconds", "error"):
        table.add_column(column, overflow="fold")
    for job_id, label in jobs.items():
        final = finals.get(job_id, {})
        status = str(final.get("status", "?"))
        colour = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(status, "")
        chunks = chunks_of(final)
        table.add_row(
            label,
            job_id[:8],
            f"[{colour}]{status}[/{colour}]" if colour else status,
            pages_text(final),
            "" if chunks is None else str(chunks),
            str(final.get("seconds", "")),
            str(final.get("error") or ""),
        )
    return table


# --- commands -------------------------------------------------------------------------------


def _cfg(ctx: typer.Context) -> Config:
    return ctx.obj


def _fail(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


def _client(cfg: Config, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=cfg.api, headers={**cfg.headers, **(headers or {})}, timeout=120)


def _request(cfg: Config, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        with _client(cfg) as client:
            return client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise _fail(f"Cannot reach the docpipe API at {cfg.api}: {exc}") from None


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
        raise _fail(f"Cannot reach the docpipe API at {cfg.api}: {exc}") from None
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


@app.command()
def submit(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="Documents.")
    ],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show live progress.")] = False,
    ocr: Annotated[str, typer.Option(help="auto | always | never")] = "auto",
    priority: Annotated[int, typer.Option(min=0, max=9, help="0 (default) to 9.")] = 0,
    password: Annotated[str | None, typer.Option(help="Password of encrypted PDFs.")] = None,
) -> None:
    """Upload documents; print their job ids (and follow them with --follow)."""
    cfg = _cfg(ctx)
    if ocr not in ("auto", "always", "never"):
        raise _fail("--ocr must be auto, always or never.")
    form = {"ocr": ocr, "priority": str(priority)}
    if password is not None:
        form["password"] = password
    jobs: dict[str, str] = {}
    refused = 0
    for path in files:
        response = upload(cfg, path, form)
        if response.status_code in (200, 202):
            job_id = str(response.json()["job_id"])
            jobs[job_id] = path.name
            console.print(f"{job_id}  {path.name}")
        else:
            refused += 1
            err_console.print(f"[red]refused[/red] {path.name}: {http_error_message(response)}")
    if follow and jobs:
        finals = asyncio.run(follow_jobs(cfg.ws, cfg.key, jobs, console, api_url=cfg.api))
        console.print(summary_table(jobs, finals))
        if any(f.get("status") != "completed" for f in finals.values()):
            raise typer.Exit(1)
    if refused:
        raise typer.Exit(1)


def _job_or_exit(cfg: Config, response: httpx.Response, job: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise _fail(http_error_message(response, job))
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
    ):  # fmt: skip
        value = body.get(field)
        if value is not None:
            table.add_row(f"[bold]{field}[/bold]", str(value))
    console.print(table)


def result_lines(summary: dict[str, Any]) -> Iterable[str]:
    yield f"pages:    {summary['pages']}"
    yield f"chars:    {summary['chars']}"
    yield f"chunks:   {summary['chunks']}"
    yield f"words:    {summary['words']}"
    entities = summary["entities"]
    listed = ", ".join(f"{kind} {n}" for kind, n in entities.items()) or "none"
    yield f"entities: {sum(entities.values())} ({listed})"
    if summary["failed_pages"]:
        yield f"failed pages: {summary['failed_pages']}"
    if summary["partial"]:
        yield "partial: the job did not finish; this is what was done"


@app.command()
def result(
    ctx: typer.Context,
    job: Annotated[str, typer.Argument(help="Job id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result JSON.")] = False,
) -> None:
    """Show a completed job's result: a summary, or everything with --json."""
    cfg = _cfg(ctx)
    response = _request(cfg, "GET", f"/v1/jobs/{job}/result")
    if response.status_code == 409:
        raise _fail(detail_of(response))
    body = _job_or_exit(cfg, response, job)
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
        raise _fail(http_error_message(response, job))


# --- dead letters (admin) ---------------------------------------------------------------------

DEFAULT_PROGRESS = "http://127.0.0.1:8001"
DEFAULT_ADMIN_KEY = "admin-key"

dlq_app = typer.Typer(
    name="dlq",
    help="Inspect, replay and purge dead letters (needs an admin key).",
    no_args_is_help=True,
)
app.add_typer(dlq_app)


@dataclass(frozen=True)
class AdminConfig:
    progress: str
    key: str


@dlq_app.callback()
def dlq_options(
    ctx: typer.Context,
    progress_url: Annotated[
        str,
        typer.Option(
            envvar="DOCPIPE_PROGRESS_URL",
            help="Base URL of the progress service (dead-letter API).",
        ),
    ] = DEFAULT_PROGRESS,
    admin_key: Annotated[
        str, typer.Option(envvar="DOCPIPE_ADMIN_KEY", help="Admin API key.")
    ] = DEFAULT_ADMIN_KEY,
) -> None:
    ctx.obj = AdminConfig(progress_url.rstrip("/"), admin_key)


def _admin_request(cfg: AdminConfig, method: str, path: str, **kw: Any) -> httpx.Response:
    try:
        with httpx.Client(
            base_url=cfg.progress, headers={"Authorization": f"Bearer {cfg.key}"}, timeout=120
        ) as client:
            return client.request(method, path, **kw)
    except httpx.TransportError as exc:
        raise _fail(f"Cannot reach the progress service at {cfg.progress}: {exc}") from None


def _admin_error(response: httpx.Response, what: str) -> typer.Exit:
    code = response.status_code
    if code == 401:
        return _fail("The admin key was refused (401): pass --admin-key or set DOCPIPE_ADMIN_KEY.")
    if code == 403:
        return _fail("This needs an admin key (403): pass --admin-key or set DOCPIPE_ADMIN_KEY.")
    if code == 404:
        return _fail(f"No such dead letter {what} (404).")
    return _fail(f"HTTP {code} {what}: {detail_of(response)}")


def dead_letter_table(items: list[dict[str, Any]]) -> Table:
    table = Table(title="dead letters")
    for column in ("id", "queue", "event", "reason", "attempts", "job", "created", "replayed"):
        table.add_column(column, overflow="fold")
    for item in items:
        replayed = item.get("replay_count") or 0
        table.add_row(
            str(item.get("id")),
            str(item.get("queue") or ""),
            str(item.get("routing_key") or ""),
            str(item.get("reason") or ""),
            str(item.get("attempts", "")),
            str(item.get("job_id") or "")[:8],
            str(item.get("created_at") or "")[:19],
            f"{replayed}x" if replayed else "",
        )
    return table


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    queue: Annotated[str | None, typer.Option(help="Queue or group (e.g. ocr).")] = None,
    job: Annotated[str | None, typer.Option(help="Job id.")] = None,
    reason: Annotated[str | None, typer.Option(help="e.g. retries-exhausted, malformed.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON items.")] = False,
) -> None:
    """List dead letters, newest first."""
    cfg: AdminConfig = ctx.obj
    params: dict[str, Any] = {"limit": limit}
    for name, value in (("queue", queue), ("job_id", job), ("reason", reason)):
        if value:
            params[name] = value
    response = _admin_request(cfg, "GET", "/v1/dead-letters", params=params)
    if response.status_code != 200:
        raise _admin_error(response, "")
    body = response.json()
    if as_json:
        typer.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    items = body.get("items") or []
    if not items:
        console.print("No dead letters.")
        return
    console.print(dead_letter_table(items))
    if body.get("next_cursor"):
        console.print(f"[dim]more: raise --limit (showing {len(items)})[/dim]")


@dlq_app.command("show")
def dlq_show(
    ctx: typer.Context, dead_letter: Annotated[int, typer.Argument(help="Dead letter id.")]
) -> None:
    """Show one dead letter with its payload and headers (JSON)."""
    cfg: AdminConfig = ctx.obj
    response = _admin_request(cfg, "GET", f"/v1/dead-letters/{dead_letter}")
    if response.status_code != 200:
        raise _admin_error(response, str(dead_letter))
    typer.echo(json.dumps(response.json(), indent=2, ensure_ascii=False))


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    ids: Annotated[list[int] | None, typer.Argument(help="Dead letter ids.")] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Every dead letter not replayed yet (see --queue).")
    ] = False,
    queue: Annotated[str | None, typer.Option(help="With --all: only this queue.")] = None,
    job: Annotated[str | None, typer.Option(help="With --all: only this job.")] = None,
) -> None:
    """Publish dead letters again: by id, or --all [--queue Q] [--job J]."""
    cfg: AdminConfig = ctx.obj
    if ids and replay_all:
        raise _fail("Give ids or --all, not both.")
    if not ids and not replay_all:
        raise _fail("Give dead letter ids, or --all (optionally with --queue/--job).")
    body: dict[str, Any] = {"ids": ids} if ids else {"all": True}
    if replay_all:
        if queue:
            body["queue"] = queue
        if job:
            body["job_id"] = job
    response = _admin_request(cfg, "POST", "/v1/dead-letters/replay", json=body)
    if response.status_code != 200:
        raise _admin_error(response, "")
    result = response.json()
    replayed = result.get("replayed") or []
    console.print(f"Replayed {len(replayed)}: {' '.join(map(str, replayed)) or '-'}")
    if result.get("revived_jobs"):
        console.print(f"Revived jobs: {' '.join(result['revived_jobs'])}")
    problems = False
    for missing in result.get("not_found") or []:
        err_console.print(f"[red]not found[/red] {missing}")
        problems = True
    for failure in result.get("failed") or []:
        err_console.print(f"[red]failed[/red] {failure.get('id')}: {failure.get('error')}")
        problems = True
    if problems:
        raise typer.Exit(1)


@dlq_app.command("purge")
def dlq_purge(
    ctx: typer.Context,
    ids: Annotated[list[int], typer.Argument(help="Dead letter ids.")],
) -> None:
    """Delete dead letters for good."""
    cfg: AdminConfig = ctx.obj
    missing = 0
    for dead_letter in ids:
        response = _admin_request(cfg, "DELETE", f"/v1/dead-letters/{dead_letter}")
        if response.status_code == 204:
            console.print(f"Purged {dead_letter}.")
        elif response.status_code == 404:
            err_console.print(f"[red]not found[/red] {dead_letter}")
            missing += 1
        else:
            raise _admin_error(response, str(dead_letter))
    if missing:
        raise typer.Exit(1)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
