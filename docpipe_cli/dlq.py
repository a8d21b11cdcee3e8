"""`docpipe dlq`: inspect, replay and purge dead letters over the progress service's admin API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

import httpx
import typer

from docpipe_cli.views import console, dead_letter_table, detail_of, err_console, fail

DEFAULT_PROGRESS = "http://127.0.0.1:8001"
DEFAULT_ADMIN_KEY = "admin-key"

dlq_app = typer.Typer(
    name="dlq",
    help="Inspect, replay and purge dead letters (needs an admin key).",
    no_args_is_help=True,
)


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
        raise fail(f"Cannot reach the progress service at {cfg.progress}: {exc}") from None


def _admin_error(response: httpx.Response, what: str) -> typer.Exit:
    code = response.status_code
    if code == 401:
        return fail("The admin key was refused (401): pass --admin-key or set DOCPIPE_ADMIN_KEY.")
    if code == 403:
        return fail("This needs an admin key (403): pass --admin-key or set DOCPIPE_ADMIN_KEY.")
    if code == 404:
        return fail(f"No such dead letter {what} (404).")
    return fail(f"HTTP {code} {what}: {detail_of(response)}")


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
        raise fail("Give ids or --all, not both.")
    if not ids and not replay_all:
        raise fail("Give dead letter ids, or --all (optionally with --queue/--job).")
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
