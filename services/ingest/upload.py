"""Receiving an upload: stream the multipart body's file part into the blob store, enforcing
the size limit as bytes arrive, then sniff the stored blob."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from services.ingest.errors import FilenameTooLong, UploadRejected, UploadTimedOut, UploadTooLarge
from services.ingest.filenames import MAX_FILENAME_CHARS, filename_length
from services.ingest.multipart import FieldPart, FileData, FileEnd, FileStart, iter_form
from shared.blobstore import Blobs, digest_of
from shared.sniff import UNSUPPORTED_REASON, sniff_path, unsupported_reason

T = TypeVar("T")

# Multipart framing and form fields on top of the file itself, for the Content-Length check.
MULTIPART_SLACK_BYTES = 64 * 1024
UPLOAD_FIELD = "file"


class _Aborted(Exception):
    pass


class BlobWriter:
    """Feeds chunks to the blob store's put_chunks running in a worker thread, with backpressure:
    the request waits while the disk is behind, instead of buffering the upload."""

    def __init__(self, store: Blobs, buffer: int = 8) -> None:
        self.store = store
        send, receive = anyio.create_memory_object_stream[bytes](buffer)
        self._send: MemoryObjectSendStream[bytes] = send
        self._receive: MemoryObjectReceiveStream[bytes] = receive
        self._aborted = False
        self._task: asyncio.Task[str] = asyncio.ensure_future(anyio.to_thread.run_sync(self._run))

    def _chunks(self) -> Iterator[bytes]:
        while True:
            try:
                chunk = anyio.from_thread.run(self._receive.receive)
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                if self._aborted:
                    raise _Aborted() from None  # put_chunks removes its temporary file
                return
            yield chunk

    def _run(self) -> str:
        try:
            return self.store.put_chunks(self._chunks())
        finally:
            self._receive.close()

    async def write(self, data: bytes) -> None:
        if data:
            await self._send.send(data)

    async def finish(self) -> str:
        """Close the stream and wait for the blob to be in place; returns its URI."""
        self._send.close()
        return await self._task

    async def abort(self) -> None:
        """Drop the partial blob. Never blocks on a full buffer (close() is synchronous)."""
        self._aborted = True
        self._send.close()
        with contextlib.suppress(_Aborted, Exception):
            await self._task


@dataclass
class ReceivedUpload:
    uri: str
    size_bytes: int
    client_filename: str | None
    declared_type: str | None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        return digest_of(self.uri)


async def receive_upload(
    content_type: str, stream: AsyncIterator[bytes], store: Blobs, max_bytes: int
) -> ReceivedUpload | None:
    """Store the form's `file` part as a blob and collect the other fields.

    Returns None when the form has no `file` part. Raises UploadTooLarge as soon as the file
    passes `max_bytes`, FilenameTooLong before storing a file whose name is too long,
    UploadRejected for a second file, MultipartError for a broken body.
    """
    fields: dict[str, str] = {}
    writer: BlobWriter | None = None
    upload: ReceivedUpload | None = None
    in_file = False  # inside the `file` part (other file parts are read and dropped)
    size = 0
    try:
        async for event in iter_form(content_type, stream):
            if isinstance(event, FieldPart):
                fields.setdefault(event.name, event.value)
            elif isinstance(event, FileStart):
                if event.name != UPLOAD_FIELD:
                    continue
                if upload is not None or writer is not None:
                    raise UploadRejected("Send one file per request.")
                if (length := filename_length(event.filename)) > MAX_FILENAME_CHARS:
                    raise FilenameTooLong(length)
                writer = BlobWriter(store)
                in_file = True
                upload = ReceivedUpload("", 0, event.filename, event.content_type)
            elif isinstance(event, FileData) and in_file:
                assert writer is not None
                size += len(event.data)
                if size > max_bytes:
                    raise UploadTooLarge(max_bytes)
                await writer.write(event.data)
            elif isinstance(event, FileEnd) and in_file:
                assert writer is not None and upload is not None
                in_file = False
                upload.uri = await writer.finish()
                upload.size_bytes = size
                writer = None
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise
    if upload is not None:
        upload.fields = fields
    return upload


async def with_read_timeout(stream: AsyncIterable[bytes], seconds: float) -> AsyncIterator[bytes]:
    """The chunks of `stream`; UploadTimedOut when the next one takes longer than `seconds`
    (a stalled client must not hold a connection and a blob writer forever)."""
    chunks = aiter(stream)
    while True:
        try:
            async with asyncio.timeout(seconds):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise UploadTimedOut(seconds) from None
        yield chunk


async def sniff_blob(store: Blobs, uri: str, filename: str | None = None) -> str | None:
    """The stored document's format, judged by its bytes (and a ZIP container's declared
    type; `filename` only tells Markdown from plain text).

    Blobs are content-addressed, so identical uploads racing each other share one file; when it
    is gone, a concurrent upload of the same bytes judged them unsupported and discarded it
    (discard_blob), and the same bytes get the same verdict here."""
    return await _read_blob(store, uri, lambda path: sniff_path(path, filename), None)


async def unsupported_upload_reason(store: Blobs, uri: str) -> str:
    """Why an upload that sniffs as unsupported cannot be processed (read in a thread); the
    generic sentence when a concurrent upload of the same bytes has discarded the blob."""
    return await _read_blob(store, uri, unsupported_reason, UNSUPPORTED_REASON)


async def _read_blob(store: Blobs, uri: str, read: Callable[[Path], T], gone: T) -> T:
    """`read` of the blob's file, in a thread; `gone` when the blob is not there."""

    def read_pinned() -> T:
        with store.pinned(uri) as path:
            return read(path)

    try:
        return await anyio.to_thread.run_sync(read_pinned)
    except FileNotFoundError:  # BlobNotFound included
        return gone


async def discard_blob(store: Blobs, uri: str) -> None:
    """Remove a blob nothing should reference (an empty or unsupported upload)."""
    with contextlib.suppress(ValueError):
        await anyio.to_thread.run_sync(store.delete, uri)
