"""A scripted OpenAI-compatible HTTP server on localhost, for what a real model cannot be made
to do on cue: 429 with Retry-After, 401, 5xx, malformed JSON, a fixed latency.

It is a real HTTP server (a thread of its own), so the client, its timeouts and its connection
handling are exercised as they are in production. Each test scripts its replies:

    standin.script(Reply(status=429, headers={"Retry-After": "1"}), Reply(content="ok"))

Replies are taken in order; when the script is empty, `default` answers (a Reply, or a function
of the request body returning one). Every chat request is recorded with its arrival time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    content: str = "A short summary."
    prompt_tokens: int = 40
    completion_tokens: int = 6
    cached_tokens: int = 0
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as the body instead of a completion (malformed answers)
    error: str = "scripted error"


@dataclass(frozen=True)
class Recorded:
    at: float  # time.monotonic() on arrival
    body: dict[str, Any]


class OpenAIStandin:
    def __init__(self, default: Reply | Callable[[dict[str, Any]], Reply] = Reply()) -> None:
        self.default = default
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[Recorded] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> OpenAIStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def reset(self, default: Reply | Callable[[dict[str, Any]], Reply] | None = None) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            if default is not None:
                self.default = default

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(Recorded(time.monotonic(), body))
            if self._script:
                return self._script.popleft()
        return self.default(body) if callable(self.default) else self.default

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/") in ("/v1/models", "/healthz"):
                    self._send(200, {"object": "list", "data": [{"id": "standin"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.startswith("/v1/chat/completions"):
                    self._send(404, {"error": {"message": "not found"}})
                    return
                reply = standin._next(body)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    self._send(
                        reply.status,
                        {"error": {"message": reply.error, "type": "scripted"}},
                        reply.headers,
                    )
                    return
                if reply.raw is not None:
                    self._send_bytes(200, reply.raw, reply.headers)
                    return
                self._send(200, completion(body, reply), reply.headers)

            def _send(
                self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
            ) -> None:
                self._send_bytes(status, json.dumps(payload).encode(), headers)

            def _send_bytes(
                self, status: int, data: bytes, headers: dict[str, str] | None = None
            ) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout or a cancel): nothing to answer

        return Handler


def completion(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "standin"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens},
        },
    }
