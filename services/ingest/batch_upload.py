"""Receiving a batch's multipart form: every `files` part streamed into the blob store as it
arrives (size limit per file, count limit per batch), the other fields collected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.ingest.errors import FilenameTooLong, TooManyInBatch, UploadTooLarge
from services.ingest.filenames import MAX_FILENAME_CHARS, filename_length
from services.ingest.multipart import FieldPart, FileData, FileEnd, FileStart, iter_form
from services.ingest.upload import BlobWriter, ReceivedUpload
from shared.blobstore import Blobs

BATCH_FILE_FIELD = "files"
# Form fields besides the files: name, labels, urls and the job options.
BATCH_FORM_FIELDS = 16


@dataclass
class BatchForm:
    files: list[ReceivedUpload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


class _Receiver:
    def __init__(self, store: Blobs, max_bytes: int, max_files: int) -> None:
        self.store, self.max_bytes, self.max_files = store, max_bytes, max_files
        self.form = BatchForm()
        self.writer: BlobWriter | None = None
        self.current: ReceivedUpload | None = None

    async def start(self, event: FileStart) -> None:
        if len(self.form.files) >= self.max_files:
            raise TooManyInBatch("files", self.max_files)
        if (length := filename_length(event.filename)) > MAX_FILENAME_CHARS:
            raise FilenameTooLong(length)
        self.writer = BlobWriter(self.store)
        self.current = ReceivedUpload("", 0, event.filename, event.content_type)

    async def data(self, chunk: bytes) -> None:
        assert self.writer is not None and self.current is not None
        self.current.size_bytes += len(chunk)
        if self.current.size_bytes > self.max_bytes:
            raise UploadTooLarge(self.max_bytes)
        await self.writer.write(chunk)

    async def end(self) -> None:
        assert self.writer is not None and self.current is not None
        self.current.uri = await self.writer.finish()
        self.form.files.append(self.current)
        self.writer, self.current = None, None

    async def abort(self) -> None:
        if self.writer is not None:
            await self.writer.abort()


async def receive_batch_form(
    content_type: str,
    stream: AsyncIterator[bytes],
    store: Blobs,
    *,
    max_bytes: int,
    max_files: int,
) -> BatchForm:
    """Store each `files` part as a blob; other file parts are read and dropped. Raises
    TooManyInBatch past max_files, UploadTooLarge for a file past max_bytes, MultipartError for
    a broken body. On a refusal, the files stored so far stay (blobs are content-addressed and
    may be shared with a concurrent upload of the same bytes), as a refused single upload's do."""
    receiver = _Receiver(store, max_bytes, max_files)
    in_file = False
    try:
        async for event in iter_form(content_type, stream, max_parts=max_files + BATCH_FORM_FIELDS):
            if isinstance(event, FieldPart):
                receiver.form.fields.setdefault(event.name, event.value)
            elif isinstance(event, FileStart) and event.name == BATCH_FILE_FIELD:
                await receiver.start(event)
                in_file = True
            elif isinstance(event, FileData) and in_file:
                await receiver.data(event.data)
            elif isinstance(event, FileEnd) and in_file:
                await receiver.end()
                in_file = False
    except BaseException:
        await receiver.abort()
        raise
    return receiver.form
