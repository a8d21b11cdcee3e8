"""Following a batch on the progress service's batch WebSocket (WS /v1/batches/{id}/events):
one overall bar (percent, ETA, cost), a bar per document in flight, and a line per finished
document. BatchState folds the messages (pure, tested with a fake stream); follow_batch
connects, resumes a dropped connection with ?after=<last seq>, and renders."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

from docpipe_cli.follow import (
    FATAL_CLOSE_CODES,
    IDLE_POLL_SECONDS,
    MAX_CONNECT_FAILURES,
    RECONNECT_PAUSE_SECONDS,
    Poll,
    polled_end,
)
from docpipe_cli.views import STATUS_COLOURS, apply_update, describe, format_eta, is_final
from shared.events import JobStatus

Snapshot = dict[str, Any]


def batch_events_url(ws_base: str, batch_id: str, key: str, after: int | None = None) -> str:
    url = f"{ws_base.rstrip('/')}/v1/batches/{batch_id}/events?token={quote(key, safe='')}"
    return f"{url}&after={after}" if after else url


def format_cost(cost: object) -> str:
    return f"${cost:.4f}" if isinstance(cost, int | float) else ""


def counts_text(aggregate: Snapshot) -> str:
    """ "12/50 done, 1 failed": documents ended of all, and the failures worth a look."""
    total = aggregate.get("jobs_total")
    if not isinstance(total, int) or total == 0:
        return ""
    done = sum(int(aggregate.get(f"jobs_{s}") or 0) for s in ("completed", "failed", "cancelled"))
    text = f"{done}/{total} done"
    for status in ("failed", "cancelled"):
        if n := aggregate.get(f"jobs_{status}"):
            text += f", {n} {status}"
    return text


def finished_line(label: str, job: Snapshot) -> str:
    """What a finished document leaves on the screen."""
    status = str(job.get("status") or "?")
    colour = STATUS_COLOURS.get(status, "")
    shown = f"[{colour}]{status}[/{colour}]" if colour else status
    error = job.get("error")
    return f"{label}  {shown}" + (f": {error}" if error else "")


@dataclass
class Changes:
    """What one message changed, for the renderer."""

    aggregate: bool = False
    jobs: list[str] = field(default_factory=list)  # job ids whose snapshot changed
    finished: list[str] = field(default_factory=list)  # job ids that ended with this message


@dataclass
class BatchState:
    """The batch as its WebSocket has told it: the aggregate, each job's latest snapshot, and
    which jobs have ended. A message is an aggregate (seq, percent, jobs_* ...), a job's
    change ({"job": <job snapshot>}), or both; an aggregate not newer than the last (a replay
    after a reconnect) changes nothing, and a job ends once only."""

    batch_id: str
    aggregate: Snapshot = field(default_factory=dict)
    jobs: dict[str, Snapshot] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    last_seq: int | None = None

    @property
    def final(self) -> bool:
        return is_final(self.aggregate)

    def fold(self, message: Snapshot) -> Changes:
        changes = Changes()
        seq = message.get("seq")
        if isinstance(seq, int) and (self.last_seq is None or seq > self.last_seq):
            self.last_seq = seq
        job = message.get("job")
        if isinstance(job, dict) and job.get("job_id"):
            self._fold_job(str(job["job_id"]), job, changes)
        aggregate = {k: v for k, v in message.items() if k != "job"}
        if "percent" in aggregate or "status" in aggregate or aggregate.get("final"):
            updated = apply_update(self.aggregate, aggregate)
            if updated is not self.aggregate:
                self.aggregate = updated
                changes.aggregate = True
        return changes

    def _fold_job(self, job_id: str, job: Snapshot, changes: Changes) -> None:
        if job_id in self.ended:
            return
        current = self.jobs.get(job_id, {"job_id": job_id})
        updated = apply_update(current, job)
        if updated is current:
            return
        self.jobs[job_id] = updated
        changes.jobs.append(job_id)
        if is_final(updated):
            self.ended.add(job_id)
            changes.finished.append(job_id)

    def failed(self) -> bool:
        """Whether the batch ended with anything but every document completed."""
        status = self.aggregate.get("status")
        if status not in (None, JobStatus.COMPLETED):
            return True
        return any(int(self.aggregate.get(f"jobs_{s}") or 0) for s in ("failed", "cancelled"))


class BatchView:
    """The bars on the screen: the batch's, then one per document in flight."""

    COLUMNS = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TextColumn("[cyan]{task.fields[eta]}"),
        TextColumn("[magenta]{task.fields[cost]}"),
    )

    def __init__(self, progress: Progress, title: str, labels: dict[str, str]) -> None:
        self.progress = progress
        self.labels = labels
        self.overall = progress.add_task(
            f"[bold]{title}[/bold]", total=100, detail="", eta="", cost=""
        )
        self.bars: dict[str, TaskID] = {}

    def show(self, state: BatchState, changes: Changes) -> None:
        if changes.aggregate:
            agg = state.aggregate
            self.progress.update(
                self.overall,
                completed=float(agg.get("percent") or 0),
                detail=counts_text(agg),
                eta="" if state.final else format_eta(agg.get("eta_seconds")),
                cost=format_cost(agg.get("cost_usd")),
            )
        for job_id in changes.jobs:
            self._show_job(job_id, state.jobs[job_id], job_id in changes.finished)

    def clear_in_flight(self) -> None:
        """Drop the bars of documents whose end was not told (the batch's end says it all)."""
        for bar in self.bars.values():
            self.progress.remove_task(bar)
        self.bars.clear()

    def _show_job(self, job_id: str, job: Snapshot, finished: bool) -> None:
        label = self.labels.get(job_id) or job.get("filename") or job_id[:8]
        bar = self.bars.get(job_id)
        if finished:
            if bar is not None:
                self.progress.remove_task(self.bars.pop(job_id))
            self.progress.console.print(finished_line(str(label), job), highlight=False)
            return
        if bar is None:
            bar = self.bars[job_id] = self.progress.add_task(
                "", total=100, detail="", eta="", cost=""
            )
        self.progress.update(
            bar,
            description=describe(f"  {label}", job),
            completed=float(job.get("percent") or 0),
            eta=format_eta(job.get("eta_seconds")),
            cost=format_cost(job.get("cost_usd")),
        )


class BatchFollowError(Exception):
    """The batch could not be followed to its end (refused, or unreachable)."""


@dataclass
class _Reader:
    """read_batch's connection loop, with the poll that notices a batch that ended while the
    WebSocket was quiet or out of reach."""

    ws_base: str
    key: str
    state: BatchState
    on_changes: Callable[[BatchState, Changes], None]
    poll: Poll | None
    idle_seconds: float

    async def polled_final(self) -> bool:
        """Whether the batch's status, read over HTTP, says it has ended (then folded in)."""
        final = await polled_end(self.poll)
        if final is None:
            return False
        self.on_changes(self.state, self.state.fold({**final, "final": True}))
        return True

    async def read_once(self) -> None:
        """One connection: fold its messages until the final one or until it closes."""
        url = batch_events_url(self.ws_base, self.state.batch_id, self.key, self.state.last_seq)
        async with websockets.connect(url, open_timeout=10) as conn:
            while not self.state.final:
                try:
                    raw = await asyncio.wait_for(conn.recv(), self.idle_seconds)
                except TimeoutError:
                    if await self.polled_final():
                        return
                    continue
                _fold_raw(self.state, raw, self.on_changes)

    async def attempt(self) -> None:
        """read_once, with the answers that end following for good raised as
        BatchFollowError and the ones worth another try swallowed."""
        try:
            await self.read_once()
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in (401, 403, 404):
                raise BatchFollowError(f"The batch WebSocket refused us ({code}).") from None
        except InvalidURI as exc:
            raise BatchFollowError(str(exc)) from None
        except ConnectionClosed as exc:
            if exc.rcvd and exc.rcvd.code in FATAL_CLOSE_CODES:
                raise BatchFollowError(exc.rcvd.reason or f"closed ({exc.rcvd.code})") from None
        except (OSError, TimeoutError, websockets.WebSocketException):
            await self.polled_final()


async def read_batch(
    ws_base: str,
    key: str,
    state: BatchState,
    on_changes: Callable[[BatchState, Changes], None],
    *,
    max_failures: int = MAX_CONNECT_FAILURES,
    poll: Poll | None = None,
    idle_seconds: float = IDLE_POLL_SECONDS,
) -> BatchState:
    """Fold the batch WebSocket's messages into `state` until its final message; a dropped
    connection is resumed with ?after=<last seq>, up to `max_failures` connections in a row
    that told nothing new. `poll` (the batch's status over HTTP) is asked while the socket is
    out of reach or quiet for `idle_seconds`. Raises BatchFollowError when refused or
    unreachable."""
    reader = _Reader(ws_base, key, state, on_changes, poll, idle_seconds)
    failures = 0
    while not state.final:
        seq_before = state.last_seq
        await reader.attempt()
        # A connection that told nothing new counts as a failure, so a server that keeps
        # closing early (or cannot be reached) is not tried forever.
        failures = 0 if state.last_seq != seq_before else failures + 1
        if state.final:
            break
        if failures >= max_failures:
            raise BatchFollowError("Lost the connection to the progress service.")
        await asyncio.sleep(RECONNECT_PAUSE_SECONDS * min(failures + 1, 8))
    return state


def batch_poll(ws_base: str, key: str, batch_id: str) -> Poll:
    """GET /v1/batches/{id} on the progress service (the WebSocket's host, over HTTP): the
    batch's status, or None when it cannot be read."""
    base = ws_base.rstrip("/").replace("wss://", "https://", 1).replace("ws://", "http://", 1)

    async def poll() -> Snapshot | None:
        async with httpx.AsyncClient(timeout=10) as client:
            r = await client.get(
                f"{base}/v1/batches/{batch_id}", headers={"Authorization": f"Bearer {key}"}
            )
        body = r.json() if r.status_code == 200 else None
        return dict(body) if isinstance(body, dict) else None

    return poll


def _fold_raw(
    state: BatchState, raw: str | bytes, on_changes: Callable[[BatchState, Changes], None]
) -> None:
    try:
        message = json.loads(raw)
    except ValueError:
        return
    if isinstance(message, dict):
        on_changes(state, state.fold(message))


async def follow_batch(
    ws_base: str,
    key: str,
    batch_id: str,
    labels: dict[str, str],
    console: Console,
    *,
    title: str = "batch",
    max_failures: int = MAX_CONNECT_FAILURES,
) -> BatchState:
    """Show the batch's bars until its final message; returns what was learnt."""
    state = BatchState(batch_id)
    with Progress(*BatchView.COLUMNS, console=console) as progress:
        view = BatchView(progress, title, labels)
        await read_batch(
            ws_base,
            key,
            state,
            view.show,
            max_failures=max_failures,
            poll=batch_poll(ws_base, key, batch_id),
        )
        view.clear_in_flight()
    return state


def batch_summary(state: BatchState) -> str:
    """The closing line: how the batch ended, its counts and its cost."""
    agg = state.aggregate
    status = str(agg.get("status") or "unknown")
    colour = STATUS_COLOURS.get(status, "")
    shown = f"[{colour}]{status}[/{colour}]" if colour else status
    parts = [f"batch {state.batch_id} {shown}", counts_text(agg), format_cost(agg.get("cost_usd"))]
    return "  ".join(p for p in parts if p)
