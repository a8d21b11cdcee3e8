"""What the CLI shows: sentences for API errors, one-line progress, result summaries and
tables. Pure functions of the API's JSON, tested without a server."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.table import Table

from shared.events import TERMINAL_STATUSES, JobStatus

console = Console()
err_console = Console(stderr=True)

STATUS_COLOURS: dict[str, str] = {
    JobStatus.COMPLETED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLED: "yellow",
}


def fail(message: str) -> typer.Exit:
    """Print the error; the caller raises what this returns (exit status 1)."""
    err_console.print(f"[red]error:[/red] {message}")
    return typer.Exit(1)


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
    return bool(snapshot.get("final")) or snapshot.get("status") in TERMINAL_STATUSES


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


def events_url(ws_base: str, job_id: str, after: int | None = None) -> str:
    """The job's progress WebSocket; the key goes in a header, never in the URL."""
    url = f"{ws_base.rstrip('/')}/v1/jobs/{quote(job_id, safe='')}/events"
    return f"{url}?after={after}" if after else url


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


def summary_table(jobs: dict[str, str], finals: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="docpipe jobs")
    for column in ("document", "job", "status", "pages", "chunks", "seconds", "error"):
        table.add_column(column, overflow="fold")
    for job_id, label in jobs.items():
        final = finals.get(job_id, {})
        status = str(final.get("status", "?"))
        colour = STATUS_COLOURS.get(status, "")
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
