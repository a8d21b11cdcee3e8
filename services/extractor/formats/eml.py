"""EML (an RFC 5322 message): page 1 is the message: its From, To, Cc, Date and Subject, then
its body (the text/plain part, or the text/html part through the HTML extractor), then the
names of its attachments. Each attachment of a supported format follows as pages of the same
job, read by that format's extractor (an attached message recursively, as its own pages);
the first page of each starts with an `Attachment: <name>` line.

Bounds, each a sentence: at most MAX_ATTACHMENTS attachments in a message (MAX_ATTACHMENTS_TOTAL
in the whole document), attached messages
at most MAX_DEPTH deep, MIME parts nested at most MAX_PART_DEPTH deep; the document's page
and character limits count every attachment's pages. An attachment that cannot be read, or
whose type is not supported, is a page with an error (the rest of the message still counts).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from pathlib import Path

from services.extractor.formats import Record, check_chars, short
from services.extractor.formats.containers import clean_meta
from services.extractor.formats.headings import heading, headings_of
from services.extractor.normalize import normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    PageRecord,
    meta_record,
    page_record,
)

MAX_ATTACHMENTS = 50
# Across the message and every attached message in it.
MAX_ATTACHMENTS_TOTAL = 200
MAX_DEPTH = 3
MAX_PART_DEPTH = 20
_HEADERS = ("From", "To", "Cc", "Date", "Subject")
# An attachment's file name as shown in the text.
_NAME_MAX = 200


@dataclass
class MessagePages:
    """What reading a message (and its attachments) gathers: pages in order, and totals
    checked against the document's limits as they grow."""

    spec: ExtractSpec
    workdir: str
    pages: list[PageRecord] = field(default_factory=list)
    chars: int = 0
    attachments: int = 0

    def count_attachments(self, count: int) -> None:
        self.attachments += count
        if self.attachments > MAX_ATTACHMENTS_TOTAL:
            raise ExtractionFatal(
                f"The email and the messages attached to it have more than "
                f"{MAX_ATTACHMENTS_TOTAL} attachments, the limit for one document."
            )

    def add(self, record: PageRecord, prefix: str = "") -> None:
        """Add a page as the next one; `prefix` (an `Attachment: <name>` line) goes above its
        text, as a heading."""
        text = f"{prefix}\n\n{record['text']}".strip() if prefix else record["text"]
        headings = list(record.get("headings", []))
        if prefix:
            headings = headings_of([heading(2, prefix), *headings])
        self.chars += len(text)
        check_chars(self.chars, self.spec)
        if len(self.pages) + 1 > self.spec.max_pages:
            raise ExtractionFatal(
                "The email and its attachments have more pages than the limit of "
                f"{self.spec.max_pages}."
            )
        page: PageRecord = {**record, "page": len(self.pages) + 1, "text": text}
        if headings:
            page["headings"] = headings
        self.pages.append(page)


def parse_message(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def header(message: Message, name: str) -> str:
    try:
        return " ".join(str(message.get(name, "") or "").split())
    except Exception:  # a header the parser cannot make sense of
        return ""


def message_metadata(message: Message, body: Message | None) -> DocumentMeta:
    language = header(message, "Content-Language")
    if not language and body is not None:
        language = header(body, "Content-Language")  # moved there when parts were added
    return clean_meta(
        {
            "title": header(message, "Subject"),
            "author": header(message, "From"),
            "created": header(message, "Date"),
            "language": language,
            "producer": header(message, "X-Mailer") or header(message, "User-Agent"),
        }
    )


def part_text(part: Message) -> str:
    """A text part's content, decoded by its charset (an unknown charset as UTF-8 with
    replacements)."""
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def body_text(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return ""
    if body.get_content_subtype() == "html":
        from services.extractor.formats.html import main_text

        payload = body.get_payload(decode=True)
        return main_text(payload) if isinstance(payload, bytes) and payload.strip() else ""
    return part_text(body)


def attachments(message: Message, body: Message | None, depth: int = 0) -> list[Message]:
    """The message's attachments in order: every leaf part that is not the chosen body and is
    an attachment or has a file name, and every attached message (not looked into here)."""
    if depth > MAX_PART_DEPTH:
        raise ExtractionFatal(
            f"The email's parts are nested more than {MAX_PART_DEPTH} deep, which is not read."
        )
    found: list[Message] = []
    for part in message.iter_parts() if isinstance(message, EmailMessage) else []:
        if part is body:
            continue
        if part.get_content_type() == "message/rfc822":
            found.append(part)
        elif part.is_multipart():
            found += attachments(part, body, depth + 1)
        elif part.get_content_disposition() == "attachment" or part.get_filename():
            found.append(part)
        if len(found) > MAX_ATTACHMENTS:
            raise ExtractionFatal(
                f"The email has more than {MAX_ATTACHMENTS} attachments, the limit for one message."
            )
    return found


def attachment_name(part: Message, number: int) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if part.get_content_type() == "message/rfc822" and not name:
        inner = part.get_payload(0) if part.is_multipart() else None
        subject = header(inner, "Subject") if isinstance(inner, Message) else ""
        name = f"{subject or 'message'}.eml"
    return " ".join(str(name or f"attachment {number}").split())[:_NAME_MAX]


def message_page(message: EmailMessage, names: list[str]) -> str:
    lines = [f"{name}: {value}" for name in _HEADERS if (value := header(message, name))]
    parts = ["\n".join(lines), body_text(message)]
    if names:
        parts.append("Attachments: " + ", ".join(names))
    return normalize_text("\n\n".join(p for p in parts if p.strip()))


def read_message(gathered: MessagePages, data: bytes, depth: int, prefix: str = "") -> DocumentMeta:
    """Add the message's page, then its attachments' pages, to `gathered`; returns what the
    message says about itself."""
    if depth > MAX_DEPTH:
        raise ExtractionFatal(
            f"The email holds attached messages nested more than {MAX_DEPTH} deep, "
            "which is not read."
        )
    message = parse_message(data)
    body = message.get_body(preferencelist=("plain", "html"))
    parts = attachments(message, body)
    gathered.count_attachments(len(parts))
    names = [attachment_name(part, i) for i, part in enumerate(parts, start=1)]
    text = message_page(message, names)
    gathered.add(page_record(0, text, has_text_layer=bool(text)), prefix)
    for number, (part, name) in enumerate(zip(parts, names, strict=True), start=1):
        read_attachment(gathered, part, f"Attachment: {name}", number, depth)
    return message_metadata(message, body)


def read_attachment(
    gathered: MessagePages, part: Message, prefix: str, number: int, depth: int
) -> None:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload(0) if part.is_multipart() else None
        if isinstance(inner, Message):
            read_message(gathered, inner.as_bytes(policy=policy.default), depth + 1, prefix)
        return
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else b""
    if not data:
        gathered.add(
            page_record(0, "", has_text_layer=False, error="The attachment is empty."), prefix
        )
        return
    path = Path(gathered.workdir) / f"attachment-{depth}-{number}"
    path.write_bytes(data)
    try:
        pages = attachment_pages(gathered.spec, path, part.get_filename(), depth)
    except ExtractionFatal as exc:
        error = f"{prefix} could not be read: {exc.reason}"
        gathered.add(page_record(0, "", has_text_layer=False, error=error), prefix)
        return
    except (MemoryError, RecursionError):
        raise  # the whole document is over a limit
    except Exception as exc:
        error = f"{prefix} could not be read: {short(exc)}."
        gathered.add(page_record(0, "", has_text_layer=False, error=error), prefix)
        return
    finally:
        if path.exists():
            path.unlink()
    for index, page in enumerate(pages):
        gathered.add(page, prefix if index == 0 else "")


def attachment_pages(
    spec: ExtractSpec, path: Path, filename: str | None, depth: int
) -> list[PageRecord]:
    """An attachment's pages, read by its format's extractor; ExtractionFatal when its type
    is not supported or it cannot be read."""
    from services.extractor.formats import extract
    from shared.sniff import sniff_path, unsupported_reason

    fmt = sniff_path(path, filename)
    if fmt is None:
        raise ExtractionFatal(unsupported_reason(path))
    if fmt == "eml":
        gathered = MessagePages(spec, str(path.parent) + f"/eml-{depth}")
        Path(gathered.workdir).mkdir(exist_ok=True)
        read_message(gathered, path.read_bytes(), depth + 1)
        return gathered.pages
    attachment_spec = replace(
        spec, path=str(path), format=fmt, split_pages=0, page_start=0, page_stop=None
    )
    pages: list[PageRecord] = []
    for record in extract(attachment_spec):
        if record["type"] == "page":
            pages.append(record)
    return pages


def extract_eml(spec: ExtractSpec) -> Iterator[Record]:
    data = Path(spec.path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="eml-") as workdir:
        gathered = MessagePages(spec, workdir)
        try:
            metadata = read_message(gathered, data, 0)
        except ExtractionFatal:
            raise
        except (ValueError, TypeError, LookupError, IndexError, AttributeError) as exc:
            raise ExtractionFatal(f"The email could not be read: {short(exc)}.") from exc
    metadata["page_count"] = len(gathered.pages)
    yield meta_record("eml", len(gathered.pages), metadata=metadata)
    yield from gathered.pages
