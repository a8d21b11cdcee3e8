"""`docpipe submit --batch --follow`: the batch state folded from a fake message stream, what
is rendered from it, and the follower against a scripted batch WebSocket (resume, refusal)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
import websockets
from rich.console import Console

from docpipe_cli.batch import (
    BatchFollowError,
    BatchState,
    batch_events_url,
    batch_summary,
    counts_text,
    finished_line,
    follow_batch,
    format_cost,
    read_batch,
)
from docpipe_cli.commands import documents_in, parse_labels

BATCH = "b-1"


def aggregate(seq: int, **fields: Any) -> dict[str, Any]:
    base = {"batch_id": BATCH, "seq": seq, "status": "processing", "jobs_total": 3,
            "jobs_completed": 0, "jobs_failed": 0, "jobs_cancelled": 0, "percent": 0.0,
            "eta_seconds": None, "cost_usd": 0.0, "final": False}  # fmt: skip
    return {**base, **fields}


def job(job_id: str, seq: int, status: str = "processing", **fields: Any) -> dict[str, Any]:
    return {"job": {"job_id": job_id, "seq": seq, "status": status, "stage": "ocr", **fields}}


# A batch of three: a completes, b fails, c completes; the aggregate goes 0 -> 100.
STREAM: list[dict[str, Any]] = [
    aggregate(1),
    job("a", 1, percent=30.0),
    job("b", 1, percent=10.0),
    aggregate(2, percent=20.0, eta_seconds=30, cost_usd=0.0012),
    job("a", 2, "completed", percent=100.0, final=True),
    aggregate(3, percent=50.0, jobs_completed=1, eta_seconds=12, cost_usd=0.002),
    job("b", 2, "failed", error="The server at docs.example.com answered 404 Not Found."),
    job("c", 1, "completed", percent=100.0, final=True),
    aggregate(
        4,
        status="failed",
        percent=100.0,
        jobs_completed=2,
        jobs_failed=1,
        cost_usd=0.0031,
        final=True,
    ),  # fmt: skip
]


def test_state_folds_aggregates_and_jobs_and_ends_each_job_once() -> None:
    state = BatchState(BATCH)
    finished: list[str] = []
    for message in STREAM[:5]:
        finished += state.fold(message).finished
    assert finished == ["a"]
    assert state.aggregate["percent"] == 20.0 and state.last_seq == 2
    # A replay after a reconnect: an older aggregate and an ended job's update change nothing.
    replay = state.fold(aggregate(1, percent=5.0))
    assert not replay.aggregate and state.aggregate["percent"] == 20.0
    again = state.fold(job("a", 2, "completed", percent=100.0, final=True))
    assert again.jobs == [] and again.finished == []
    for message in STREAM[5:]:
        finished += state.fold(message).finished
    assert finished == ["a", "b", "c"]
    assert state.final and state.failed()
    assert state.jobs["b"]["error"].startswith("The server at docs.example.com")


def test_a_batch_that_completed_everything_has_not_failed() -> None:
    state = BatchState(BATCH)
    state.fold(aggregate(9, status="completed", percent=100.0, jobs_completed=3, final=True))
    assert state.final and not state.failed()


def test_rendered_texts() -> None:
    assert counts_text(aggregate(1)) == "0/3 done"
    agg = aggregate(5, jobs_completed=1, jobs_failed=1, jobs_cancelled=1)
    assert counts_text(agg) == "3/3 done, 1 failed, 1 cancelled"
    assert counts_text({}) == ""
    assert format_cost(0.00312) == "$0.0031" and format_cost(None) == ""
    line = finished_line("b.pdf", {"status": "failed", "error": "No route to host."})
    assert line == "b.pdf  [red]failed[/red]: No route to host."
    assert finished_line("a.pdf", {"status": "completed"}) == "a.pdf  [green]completed[/green]"
    state = BatchState(BATCH)
    state.fold(STREAM[-1])
    assert batch_summary(state) == (f"batch {BATCH} [red]failed[/red]  3/3 done, 1 failed  $0.0031")
    url = batch_events_url("ws://h:1/", BATCH, "k y", 7)
    assert url == f"ws://h:1/v1/batches/{BATCH}/events?token=k%20y&after=7"


def test_documents_in_folders_and_labels(tmp_path: Path) -> None:
    (tmp_path / "b.pdf").write_bytes(b"b")
    (tmp_path / "a.pdf").write_bytes(b"a")
    (tmp_path / ".hidden").write_bytes(b"h")
    (tmp_path / "sub").mkdir()
    single = tmp_path / "sub" / "c.pdf"
    single.write_bytes(b"c")
    assert documents_in([tmp_path, single]) == [tmp_path / "a.pdf", tmp_path / "b.pdf", single]
    assert parse_labels(["project=alpha", "empty="]) == {"project": "alpha", "empty": ""}
    with pytest.raises(typer.Exit):
        parse_labels(["nope"])


class ScriptedBatch:
    """Sends the stream up to the first finished job, drops the connection, and expects the
    resumed one to ask for after=<the last seq>."""

    def __init__(self) -> None:
        self.queries: list[dict[str, list[str]]] = []

    async def handler(self, conn: Any) -> None:
        query = parse_qs(urlsplit(conn.request.path).query)
        self.queries.append(query)
        if query.get("token") != ["k"]:
            await conn.close(4401, "A valid API key is required.")
            return
        if "after" not in query:
            for message in STREAM[:5]:
                await conn.send(json.dumps(message))
            await conn.close(1011, "going away")
            return
        assert query["after"] == ["2"]
        await conn.send(json.dumps(aggregate(2, percent=20.0)))  # a replay: ignored
        for message in STREAM[5:]:
            await conn.send(json.dumps(message))
        await conn.close()


async def test_follow_batch_resumes_and_leaves_a_line_per_document() -> None:
    script = ScriptedBatch()
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    labels = {"a": "a.pdf", "b": "b.pdf", "c": "c.pdf"}
    async with websockets.serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        state = await asyncio.wait_for(
            follow_batch(f"ws://127.0.0.1:{port}", "k", BATCH, labels, console), 10
        )
    assert len(script.queries) == 2
    assert state.final and state.ended == {"a", "b", "c"}
    text = out.getvalue()
    assert "a.pdf  completed" in text and "c.pdf  completed" in text
    assert "b.pdf  failed: The server at docs.example.com answered 404 Not Found." in text
    assert text.count("a.pdf  completed") == 1


async def test_follow_batch_stops_on_a_refused_key() -> None:
    script = ScriptedBatch()
    async with websockets.serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(BatchFollowError, match="API key"):
            await asyncio.wait_for(
                follow_batch(
                    f"ws://127.0.0.1:{port}", "bad", BATCH, {}, Console(file=io.StringIO())
                ),
                10,
            )


async def test_follow_batch_gives_up_when_nothing_listens() -> None:
    with pytest.raises(BatchFollowError, match="Lost the connection"):
        await asyncio.wait_for(
            follow_batch(
                "ws://127.0.0.1:9", "k", BATCH, {}, Console(file=io.StringIO()), max_failures=2
            ),  # fmt: skip
            10,
        )


async def test_a_quiet_socket_makes_the_follower_ask_over_http() -> None:
    async def quiet(conn: Any) -> None:
        await conn.send(json.dumps(STREAM[0]))
        await conn.wait_closed()  # never a final message

    polls: list[int] = []

    async def poll() -> dict[str, Any] | None:
        polls.append(1)
        if len(polls) < 2:
            return dict(aggregate(1))  # still running
        return aggregate(7, status="completed", percent=100.0, jobs_completed=3)

    async with websockets.serve(quiet, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        state = await asyncio.wait_for(
            read_batch(
                f"ws://127.0.0.1:{port}",
                "k",
                BatchState(BATCH),
                lambda _s, _c: None,
                poll=poll,
                idle_seconds=0.1,
            ),  # fmt: skip
            10,
        )
    assert len(polls) == 2
    assert state.final and state.aggregate["status"] == "completed" and not state.failed()
    assert state.last_seq == 1  # the polled status carries no seq to resume from


async def test_an_unreachable_socket_makes_the_follower_ask_over_http() -> None:
    async def ended() -> dict[str, Any] | None:
        return aggregate(9, status="cancelled", percent=40.0, jobs_cancelled=3)

    state = await asyncio.wait_for(
        read_batch("ws://127.0.0.1:9", "k", BatchState(BATCH), lambda _s, _c: None, poll=ended),
        10,
    )
    assert state.final and state.failed()
