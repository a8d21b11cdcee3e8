"""The WebSocket side shared by the job and the batch streams (api.py, batch_api.py): send the
messages of one subject in seq order exactly once, fill any gap from the stored backlog, and
serve the socket from the first frames until the final message or the client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import structlog
from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from shared.auth import Principal, accept_websocket
from shared.tickets import SubjectKind

log = structlog.get_logger(__name__)

# Without a live push for this long, look in the stored backlog: covers updates applied by
# another progress replica, whose hub this process does not see.
POLL_SECONDS = 5.0

WS_BAD_REQUEST = 4400
WS_NOT_FOUND = 4404
WS_TRY_AGAIN_LATER = 1013
# seq is a bigint: a larger `after` could never be compared with it.
MAX_SEQ = 2**63 - 1

Message = TypeVar("Message", bound=Mapping[str, Any])
Message_co = TypeVar("Message_co", bound=Mapping[str, Any], covariant=True)


class MessageSource(Protocol[Message_co]):
    """A hub subscription: live messages, and whether the client fell behind."""

    overflowed: bool

    async def get(self, timeout: float | None = None) -> Message_co | None: ...


def parse_after(raw: str | None) -> int | None:
    """`?after=` as a seq, or ValueError with the sentence to close with."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("'after' must be a whole number.") from None
    if not 0 <= value <= MAX_SEQ:
        raise ValueError(f"'after' must be between 0 and {MAX_SEQ}.")
    return value


class SeqStream(Generic[Message]):
    """Sends a subject's messages in seq order exactly once, filling any gap from the backlog.
    A subclass says how a message is read back and stored (`backlog`, `latest`) and when it is
    the last one (`is_final`)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket
        self.last = -1
        self.done = False

    def encode(self, message: Message) -> str:
        return json.dumps(message)

    def is_final(self, message: Message) -> bool:
        return bool(message["final"])

    def sent(self, message: Message) -> None:
        """Called after each message went out (metrics)."""

    async def backlog(self, after: int) -> list[Message]:
        """The stored messages with a seq greater than `after`, in seq order."""
        raise NotImplementedError

    async def latest(self) -> Message | None:
        """The first frame of a stream opened without `after`."""
        raise NotImplementedError

    async def send(self, message: Message) -> None:
        if self.done or message["seq"] <= self.last:
            return
        await self.ws.send_text(self.encode(message))
        self.sent(message)
        self.last = message["seq"]
        self.done = self.is_final(message)

    async def catch_up(self) -> None:
        for message in await self.backlog(max(self.last, 0)):
            await self.send(message)
            if self.done:
                return

    async def offer(self, message: Message) -> None:
        """A live message: send it, or if earlier ones are missing, read them all in order."""
        if message["seq"] <= self.last:
            return
        if message["seq"] == self.last + 1:
            await self.send(message)
        else:
            await self.catch_up()

    async def pump(self, sub: MessageSource[Message]) -> None:
        while not self.done:
            message = await sub.get(POLL_SECONDS)
            if sub.overflowed:
                await self.ws.close(WS_TRY_AGAIN_LATER, "Too slow: reconnect with ?after=<seq>.")
                return
            if message is None:
                await self.catch_up()
            else:
                await self.offer(message)

    async def start(self, after: int | None) -> None:
        """The first frames: the latest message, or every stored message after `after`."""
        latest = await self.latest()
        if after is None:
            if latest is not None:
                await self.send(latest)
            return
        self.last = after
        await self.catch_up()
        if latest is not None and latest["final"] and latest["seq"] <= self.last:
            self.done = True  # the client has already seen the end


async def _until_disconnect(websocket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass


async def pump_until_disconnect(
    websocket: WebSocket, pump: Awaitable[None]
) -> BaseException | None:
    """Run `pump` until it ends or the client goes away; returns the error that ended it, if
    it was more than the client disconnecting."""
    tasks = {asyncio.ensure_future(pump), asyncio.ensure_future(_until_disconnect(websocket))}
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception) and not isinstance(
            result, WebSocketDisconnect | RuntimeError
        ):
            return result
    return None


async def open_subject(
    websocket: WebSocket,
    after: str | None,
    *,
    kind: SubjectKind,
    subject: str,
    visible: Callable[[Principal], Awaitable[uuid.UUID | None]],
    not_found: str,
) -> tuple[uuid.UUID, int | None] | None:
    """Accept the socket and check the key or ticket, `after` and that the subject is the
    caller's to see: its id and the parsed `after`, or None once the socket is closed with the
    code that says why."""
    # Accepts first (a close before accepting would surface as HTTP 403, not a close code).
    principal = await accept_websocket(websocket, kind=kind, subject=subject)
    if principal is None:
        return None
    try:
        after_seq = parse_after(after)
    except ValueError as exc:
        await websocket.close(WS_BAD_REQUEST, str(exc))
        return None
    subject_id = await visible(principal)
    if subject_id is None:
        await websocket.close(WS_NOT_FOUND, not_found)
        return None
    return subject_id, after_seq


async def serve(
    websocket: WebSocket,
    stream: SeqStream[Message],
    sub: MessageSource[Message],
    after: int | None,
    *,
    name: str,
) -> None:
    """The first frames, then live messages until the final one (then a normal close) or the
    client leaves. `sub` must be subscribed before this reads the backlog, so nothing committed
    in between is missed."""
    await stream.start(after)
    if not stream.done:
        error = await pump_until_disconnect(websocket, stream.pump(sub))
        if error is not None:
            log.warning(f"{name} stream ended by an error", error=repr(error)[:500])
    if stream.done:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.close(1000)
