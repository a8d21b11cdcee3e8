"""Following jobs over the progress service's WebSocket, resuming a dropped connection with
?after=<last seq>, and checking the job over HTTP while the socket is unreachable or quiet."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import websockets
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from docpipe_cli.views import apply_update, describe, events_url, format_eta, is_final, pages_text

# Close codes after which reconnecting cannot help (policy violation, app-level 4xx).
FATAL_CLOSE_CODES = frozenset({1008, 4001, 4003, 4004, 4400, 4401, 4403, 4404})
# Connection attempts in a row before the follower gives up.
MAX_CONNECT_FAILURES = 20
# A quiet WebSocket for this long makes the follower check the job over HTTP.
IDLE_POLL_SECONDS = 5.0
# Between a dropped connection and the next one.
RECONNECT_PAUSE_SECONDS = 0.25

Snapshot = dict[str, Any]
Poll = Callable[[], Awaitable[Snapshot | None]]


async def polled_end(poll: Poll | None) -> Snapshot | None:
    """What the HTTP poll says of a job or batch that has ended, without its seq (so a later
    connection still resumes where it was); None while it runs, or when the poll fails."""
    if poll is None:
        return None
    with contextlib.suppress(httpx.HTTPError, ValueError):
        view = await poll()
        if view and is_final(view):
            return {k: v for k, v in view.items() if k != "seq"}
    return None


class _Refused(Exception):
    """The server refused the follower for good (bad key, no such job, bad URL)."""


class _Unreachable(Exception):
    """This connection attempt failed; another may work."""


class _Follower:
    """One job's snapshot, folded from the WebSocket's messages (and the HTTP poll)."""

    def __init__(
        self,
        ws_base: str,
        key: str,
        job_id: str,
        on_update: Callable[[Snapshot], None],
        poll: Poll | None,
        idle_seconds: float,
    ) -> None:
        self.ws_base, self.key, self.job_id = ws_base, key, job_id
        self.on_update = on_update
        self.poll = poll
        self.idle_seconds = idle_seconds
        self.snapshot: Snapshot = {"job_id": job_id}

    def _take(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.on_update(snapshot)

    async def polled_final(self) -> bool:
        """Whether the HTTP poll says the job has ended (then the snapshot carries its view)."""
        view = await polled_end(self.poll)
        if view is None:
            return False
        self._take({**self.snapshot, **view})
        return True

    async def connect_once(self) -> ClientConnection | None:
        """A connection resuming after the last seq; None when, unreachable, the job turned
        out to have ended. Raises _Refused for good, _Unreachable to try again."""
        last = self.snapshot.get("seq")
        url = events_url(self.ws_base, self.job_id, last if isinstance(last, int) else None)
        try:
            return await websockets.connect(
                url, open_timeout=10, additional_headers={"Authorization": f"Bearer {self.key}"}
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                raise _Refused(f"WebSocket refused ({status})") from None
        except InvalidURI as exc:
            raise _Refused(str(exc)) from None
        except (OSError, TimeoutError, websockets.WebSocketException):
            pass
        if await self.polled_final():
            return None
        raise _Unreachable()

    async def connect(self, max_failures: int) -> ClientConnection | None:
        """connect_once, again after 0.5, 1, 2, 3, 3... s while unreachable."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_Unreachable),
            stop=stop_after_attempt(max_failures),
            wait=wait_exponential(multiplier=0.5, max=3.0),
            reraise=True,
        ):
            with attempt:
                return await self.connect_once()
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def read(self, conn: ClientConnection) -> bool:
        """Fold messages until the final one (True) or a drop worth resuming (False)."""
        try:
            async with conn:
                while True:
                    try:
                        raw = await asyncio.wait_for(conn.recv(), self.idle_seconds)
                    except TimeoutError:
                        if await self.polled_final():
                            return True
                        continue
                    if self._fold(raw) and is_final(self.snapshot):
                        return True
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code in FATAL_CLOSE_CODES:
                reason = exc.rcvd.reason if exc.rcvd else ""
                raise _Refused(reason or f"closed ({code})") from None
        except (OSError, websockets.WebSocketException):
            pass
        return False

    def _fold(self, raw: str | bytes) -> bool:
        """Apply one message; False when it changed nothing (unreadable, or a replay)."""
        try:
            message = json.loads(raw)
        except ValueError:
            return False
        if not isinstance(message, dict):
            return False
        updated = apply_update(self.snapshot, message)
        if updated is self.snapshot:
            return False
        self._take(updated)
        return True


async def follow_job(
    ws_base: str,
    key: str,
    job_id: str,
    on_update: Callable[[Snapshot], None] = lambda _s: None,
    *,
    max_failures: int = MAX_CONNECT_FAILURES,
    poll: Poll | None = None,
    idle_seconds: float = IDLE_POLL_SECONDS,
) -> Snapshot:
    """Follow one job until its final snapshot, reconnecting with ?after=<last seq>.

    `poll` (e.g. GET /v1/jobs/{id}) is the safety net: asked while the WebSocket cannot be
    reached or has been quiet for `idle_seconds`, it notices a job that ended unannounced.
    """
    follower = _Follower(ws_base, key, job_id, on_update, poll, idle_seconds)
    while True:
        try:
            conn = await follower.connect(max_failures)
            if conn is None or await follower.read(conn):
                return follower.snapshot
        except _Refused as exc:
            return {**follower.snapshot, "status": "unknown", "error": str(exc)}
        except _Unreachable:
            return {
                **follower.snapshot,
                "status": follower.snapshot.get("status") or "unknown",
                "error": "Lost the connection to the progress service.",
            }
        await asyncio.sleep(RECONNECT_PAUSE_SECONDS)


async def follow_jobs(
    ws_url: str,
    key: str,
    jobs: dict[str, str],
    console: Console,
    *,
    api_url: str | None = None,
) -> dict[str, Snapshot]:
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

        def updater(job_id: str) -> Callable[[Snapshot], None]:
            def update(snapshot: Snapshot) -> None:
                final = is_final(snapshot)
                progress.update(
                    tasks[job_id],
                    description=describe(jobs[job_id], snapshot),
                    completed=float(snapshot.get("percent") or 0),  # 100 only when completed
                    pages=pages_text(snapshot),
                    eta="" if final else format_eta(snapshot.get("eta_seconds")),
                )

            return update

        async def one(job_id: str) -> tuple[str, Snapshot]:
            poll = job_poll(api_url, key, job_id) if api_url else None
            final = await follow_job(ws_url, key, job_id, updater(job_id), poll=poll)
            updater(job_id)({**final, "final": True})
            return job_id, {**final, "seconds": round(time.monotonic() - started, 1)}

        finals = await asyncio.gather(*(one(job_id) for job_id in jobs))
    return dict(finals)


def job_poll(api_url: str, key: str, job_id: str) -> Poll:
    """GET /v1/jobs/{id}: the job's view, or None when it cannot be read."""

    async def poll() -> Snapshot | None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(
                f"{api_url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
            )
        return dict(r.json()) if r.status_code == 200 else None

    return poll
