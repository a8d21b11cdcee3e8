"""The docpipe CLI's pure helpers, and its WebSocket follower against a scripted server."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from rich.console import Console

from docpipe_cli.follow import follow_job, follow_jobs
from docpipe_cli.views import (
    apply_update,
    chunks_of,
    detail_of,
    events_url,
    format_eta,
    http_error_message,
    is_final,
    pages_text,
    result_lines,
    summarize_result,
    summary_table,
)


def response(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://x/v1/jobs/1"))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (-1, ""), (0, "0:00"), (9.6, "0:10"), (75, "1:15"), (3725, "1:02:05")],
)
def test_format_eta(seconds: float | None, text: str) -> None:
    assert format_eta(seconds) == text


def test_http_error_messages() -> None:
    assert "DOCPIPE_API_KEY" in http_error_message(response(401, {"detail": "nope"}))
    msg = http_error_message(response(404, {"detail": "No such job."}), "abc")
    assert "abc" in msg and "404" in msg and "another tenant" in msg
    msg = http_error_message(response(409, {"detail": "The job has already completed."}))
    assert msg == "HTTP 409: The job has already completed."
    msg = http_error_message(
        response(422, {"detail": [{"loc": ["body", "priority"], "msg": "too big"}]})
    )
    assert msg == "HTTP 422: priority: too big"


def test_detail_of_non_json() -> None:
    r = httpx.Response(502, text="Bad gateway\n", request=httpx.Request("GET", "http://x"))
    assert detail_of(r) == "Bad gateway"


def test_apply_update_ignores_stale_sequence_numbers() -> None:
    snap = apply_update({"job_id": "j"}, {"seq": 2, "status": "processing", "percent": 40})
    assert snap["percent"] == 40
    assert apply_update(snap, {"seq": 1, "percent": 10}) is snap
    assert apply_update(snap, {"seq": 2, "percent": 10}) is snap
    assert apply_update(snap, {"seq": 3, "percent": 60})["percent"] == 60
    # seq 0 is the snapshot before any update was recorded: always taken.
    assert apply_update({"seq": 0}, {"seq": 0, "percent": 5})["percent"] == 5


def test_finality_pages_and_chunks() -> None:
    assert is_final({"status": "failed"})
    assert is_final({"final": True, "status": "processing"})
    assert not is_final({"status": "processing"})
    assert pages_text({"pages_done": 3, "pages_total": 10}) == "3/10 pages"
    assert pages_text({"pages_total": None}) == ""
    assert chunks_of({"stages": {"analyze": {"total": 7, "done": 2}}}) == 7
    assert chunks_of({}) is None


def test_events_url_carries_no_key_and_resumes() -> None:
    assert events_url("ws://h:1/", "j") == "ws://h:1/v1/jobs/j/events"
    assert events_url("ws://h:1", "j", 5).endswith("/events?after=5")
    assert events_url("ws://h:1", "j", 0).endswith("/events")


RESULT = {
    "text": "Hello world\n\nPage two",
    "pages": [{"number": 1, "text": "Hello world"}, {"number": 2, "text": "Page two"}],
    "chunks": [
        {"analysis": {"word_count": 2, "entities": [{"kind": "email"}, {"kind": "url"}]}},
        {"analysis": {"word_count": 2, "entities": [{"kind": "email"}]}},
    ],
    "failed_pages": [],
    "partial": False,
}


def test_summarize_result() -> None:
    summary = summarize_result(RESULT)
    assert summary == {
        "pages": 2,
        "chars": len(RESULT["text"]),
        "chunks": 2,
        "words": 4,
        "entities": {"email": 2, "url": 1},
        "failed_pages": 0,
        "partial": False,
    }
    lines = list(result_lines(summary))
    assert "entities: 3 (email 2, url 1)" in lines
    assert summarize_result({})["pages"] is None


def test_summary_table_lists_every_job() -> None:
    console = Console(record=True, width=200)
    console.print(
        summary_table(
            {"j1-aaaaaaaa": "a.pdf", "j2-bbbbbbbb": "b.pdf"},
            {
                "j1-aaaaaaaa": {
                    "status": "completed",
                    "pages_done": 2,
                    "pages_total": 2,
                    "stages": {"analyze": {"total": 4}},
                    "seconds": 1.5,
                },
                "j2-bbbbbbbb": {"status": "failed", "error": "The PDF is encrypted."},
            },
        )  # fmt: skip
    )
    text = console.export_text()
    assert "a.pdf" in text and "completed" in text and "2/2 pages" in text
    assert "The PDF is encrypted." in text


# --- the follower against a scripted WebSocket server ---------------------------------------


class ScriptedProgress:
    """Drops the first connection after two updates; the resumed one must ask for after=2."""

    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []

    async def handler(self, conn: Any) -> None:
        query = parse_qs(urlsplit(conn.request.path).query)
        self.requests.append(query)
        assert "token" not in query  # the key travels in a header, never in the URL
        if conn.request.headers.get("Authorization") != "Bearer k":
            await conn.close(4401, "A valid API key is required.")
            return
        if "after" not in query:
            for seq, percent in ((1, 10.0), (2, 40.0)):
                await conn.send(json.dumps({"seq": seq, "status": "processing",
                                            "stage": "extract", "percent": percent}))  # fmt: skip
            await conn.close(1011, "going away")
            return
        assert query["after"] == ["2"]
        await conn.send(json.dumps({"seq": 2, "status": "processing", "percent": 40.0}))
        await conn.send(json.dumps({"seq": 3, "status": "completed", "percent": 100.0,
                                    "final": True, "pages_done": 1, "pages_total": 1}))  # fmt: skip
        await conn.close()


async def test_follow_job_resumes_after_a_dropped_connection() -> None:
    script = ScriptedProgress()
    async with websockets.serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        seen: list[float] = []
        final = await asyncio.wait_for(
            follow_job(f"ws://127.0.0.1:{port}", "k", "job-1", lambda s: seen.append(s["percent"])),
            10,
        )
    assert final["status"] == "completed" and final["seq"] == 3
    assert seen == [10.0, 40.0, 100.0]  # the replayed seq 2 changed nothing
    assert len(script.requests) == 2


async def test_follow_job_gives_up_on_a_refused_key() -> None:
    script = ScriptedProgress()
    async with websockets.serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        final = await asyncio.wait_for(follow_job(f"ws://127.0.0.1:{port}", "bad", "j"), 10)
    assert final["status"] == "unknown"
    assert "API key" in final["error"]


async def test_follow_job_stops_when_nothing_listens() -> None:
    final = await asyncio.wait_for(follow_job("ws://127.0.0.1:9", "k", "j", max_failures=2), 10)
    assert final["status"] == "unknown"
    assert "Lost the connection" in final["error"]


async def test_follow_jobs_returns_final_snapshots() -> None:
    script = ScriptedProgress()
    async with websockets.serve(script.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        finals = await asyncio.wait_for(
            follow_jobs(f"ws://127.0.0.1:{port}", "k", {"job-1": "a.pdf"}, Console(quiet=True)),
            10,
        )
    assert finals["job-1"]["status"] == "completed"
    assert isinstance(finals["job-1"]["seconds"], float)


async def test_follow_job_checks_over_http_when_the_socket_goes_quiet() -> None:
    async def silent_after_one(conn: Any) -> None:
        await conn.send(json.dumps({"seq": 1, "status": "processing", "percent": 5.0}))
        await conn.wait_closed()

    polls = 0

    async def poll() -> dict[str, Any]:
        nonlocal polls
        polls += 1
        return {"status": "cancelled", "error": "Cancelled by the client."}

    async with websockets.serve(silent_after_one, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        final = await asyncio.wait_for(
            follow_job(f"ws://127.0.0.1:{port}", "k", "j", poll=poll, idle_seconds=0.2), 10
        )
    assert final["status"] == "cancelled" and final["seq"] == 1
    assert polls == 1


def flaky_api(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[tuple[str | None, bytes]]:
    """The CLI's HTTP client, answered in-process: the first `failures` uploads are reset
    (as a connection dropped mid-request would be); the rest are accepted."""
    import docpipe_cli.commands as cli_module

    seen: list[tuple[str | None, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("Idempotency-Key"), request.read()))
        if len(seen) <= failures:
            raise httpx.ReadError("connection reset by peer", request=request)
        return httpx.Response(202, json={"job_id": "5b1c6a4e-0000-4000-8000-000000000001"})

    def client(cfg: Any, headers: dict[str, str] | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=cfg.api,
            headers={**cfg.headers, **(headers or {})},
            transport=httpx.MockTransport(handler),
        )

    monkeypatch.setattr(cli_module, "_client", client)
    monkeypatch.setattr("time.sleep", lambda _s: None)  # tenacity's wait
    return seen


def submit_hello(tmp_path: Any) -> Any:
    """`docpipe submit doc.txt` (the file says "hello"), run in-process."""
    from typer.testing import CliRunner

    from docpipe_cli.commands import app

    doc = tmp_path / "doc.txt"
    doc.write_text("hello")
    return CliRunner().invoke(app, ["submit", str(doc)])


def test_an_upload_cut_off_is_sent_again_with_the_same_idempotency_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seen = flaky_api(monkeypatch, failures=1)
    result = submit_hello(tmp_path)
    assert result.exit_code == 0, result.output
    assert "5b1c6a4e-0000-4000-8000-000000000001" in result.output
    (key1, body1), (key2, body2) = seen
    assert key1 and key1 == key2  # the API answers the retry with the job it already has
    for body in (body1, body2):  # the file is sent whole again (each with its own boundary)
        assert b'filename="doc.txt"' in body and b"\r\n\r\nhello\r\n" in body


def test_an_upload_that_never_gets_through_fails_with_a_sentence(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from docpipe_cli.commands import UPLOAD_ATTEMPTS

    seen = flaky_api(monkeypatch, failures=99)
    result = submit_hello(tmp_path)
    assert result.exit_code == 1
    assert "Cannot reach the docpipe API" in result.output
    assert len(seen) == UPLOAD_ATTEMPTS and len({key for key, _ in seen}) == 1
