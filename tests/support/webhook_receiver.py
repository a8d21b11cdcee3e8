"""A real HTTP webhook receiver for the tests: a threaded HTTP server on 127.0.0.1 that
verifies every request's Standard Webhooks signature with the `standardwebhooks` library,
answers 500 to the first `failures` requests of each webhook-id and 200 after, and records
everything it saw."""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: str
    verified: bool
    answered: int

    @property
    def event(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    def __init__(self, secret: str, *, failures: int = 2) -> None:
        self.secret = secret
        self.failures = failures
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def answer(self, webhook_id: str, headers: dict[str, str], body: str) -> Received:
        """Verify, decide the answer and record the request (under the lock: concurrent
        requests of one id are counted in order)."""
        try:
            Webhook(self.secret).verify(body, headers)
            verified = True
        except WebhookVerificationError:
            verified = False
        with self._changed:
            seen = sum(1 for r in self.received if r.webhook_id == webhook_id)
            answered = 401 if not verified else (500 if seen < self.failures else 200)
            received = Received(webhook_id, headers, body, verified, answered)
            self.received.append(received)
            self._changed.notify_all()
        return received

    def successes(self) -> Counter[str]:
        """How many 200s each webhook-id got."""
        with self._lock:
            return Counter(r.webhook_id for r in self.received if r.answered == 200)

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """Block until `count` requests were answered 200 (then return those), or fail."""
        with self._changed:
            done = self._changed.wait_for(
                lambda: sum(r.answered == 200 for r in self.received) >= count, timeout
            )
            if not done:
                raise TimeoutError(f"{count} successful deliveries not seen: {self.received}")
            return [r for r in self.received if r.answered == 200]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                received = receiver.answer(headers.get("webhook-id", ""), headers, body)
                self.send_response(received.answered)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
