"""What the ZIP-based formats share: opening the container only after its declared sizes
are checked, reading one entry with a bound, parsing XML without entities, and the document
metadata the containers declare (OOXML docProps, OpenDocument meta.xml).

XML is parsed with defusedxml, which refuses DTD entities (XXE, billion laughs) instead of
expanding them; such a part makes the document unreadable with a sentence.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from services.extractor.spec import DocumentMeta, ExtractionFatal
from shared.sniff import zip_problem

# The most a single XML part may inflate to before it is parsed: a spreadsheet's sheet can be
# large, so sheets stream (openpyxl); the parts parsed whole here (content.xml, a chapter,
# docProps) stay under this.
ENTRY_MAX_BYTES = 64 * 1024 * 1024
# Metadata values are short; a title of megabytes is cut.
META_VALUE_MAX_CHARS = 1000

_CORE_FIELDS = {
    "title": "title",
    "creator": "author",
    "subject": "subject",
    "created": "created",
    "modified": "modified",
    "language": "language",
}
_ODF_FIELDS = {
    "title": "title",
    "initial-creator": "author",
    "creator": "author",
    "subject": "subject",
    "creation-date": "created",
    "date": "modified",
    "language": "language",
    "generator": "producer",
}


def open_zip(path: str, what: str) -> zipfile.ZipFile:
    """The container, once its entry count, inflated size and ratio are within bounds;
    ExtractionFatal naming `what` (\"spreadsheet\") when it is a bomb or not a ZIP."""
    problem = zip_problem(path)
    if problem is not None:
        raise ExtractionFatal(problem)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExtractionFatal(f"The {what} is damaged and could not be read: {exc}.") from exc


def read_entry(zf: zipfile.ZipFile, name: str, what: str, *, required: bool = True) -> bytes:
    """One entry's bytes, refused above ENTRY_MAX_BYTES; b"" for a missing optional one."""
    try:
        info = zf.getinfo(name)
    except KeyError:
        if not required:
            return b""
        raise ExtractionFatal(f"The {what} is damaged: it has no {name[:100]!r}.") from None
    if info.file_size > ENTRY_MAX_BYTES:
        limit = ENTRY_MAX_BYTES // (1024 * 1024)
        raise ExtractionFatal(f"The {what}'s part {name[:100]!r} is larger than {limit} MB.")
    try:
        return zf.read(info)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise ExtractionFatal(f"The {what} is damaged and could not be read: {exc}.") from exc


def parse_xml(data: bytes, what: str) -> Any:
    """The root element (xml.etree) of a part; entities and malformed XML are a sentence."""
    from defusedxml import DefusedXmlException
    from defusedxml import ElementTree as SafeTree

    try:
        return SafeTree.fromstring(data)
    except DefusedXmlException as exc:
        raise ExtractionFatal(
            f"The {what} declares XML entities, which are not allowed ({type(exc).__name__})."
        ) from exc
    except SafeTree.ParseError as exc:
        raise ExtractionFatal(f"The {what} is damaged: its XML does not parse ({exc}).") from exc


def local_name(tag: Any) -> str:
    """`{namespace}name` → `name` (comments and processing instructions have no str tag)."""
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1]


def children(element: Any, name: str) -> Iterator[Any]:
    return (child for child in element if local_name(child.tag) == name)


_PDF_DATE = re.compile(
    r"^D?:?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?([Zz+\-])?(\d{2})?'?(\d{2})?'?"
)


def iso_date(value: Any) -> str | None:
    """A date as ISO 8601 when it parses (a datetime, W3CDTF, RFC 2822, a PDF date), else the
    text as given (trimmed); None when empty."""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        pass
    pdf = _PDF_DATE.match(text)
    if pdf and text.startswith("D:"):
        year, month, day, hour, minute, second, sign, tz_hour, tz_minute = pdf.groups()
        stamp = f"{year}-{month or '01'}-{day or '01'}T{hour or '00'}:{minute or '00'}:"
        stamp += second or "00"
        if sign in ("+", "-"):
            stamp += f"{sign}{tz_hour or '00'}:{tz_minute or '00'}"
        elif sign in ("Z", "z"):
            stamp += "+00:00"
        try:
            return datetime.fromisoformat(stamp).isoformat()
        except ValueError:
            return text[:META_VALUE_MAX_CHARS]
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).isoformat()
    except (TypeError, ValueError, IndexError):
        return text[:META_VALUE_MAX_CHARS]


def clean_meta(raw: dict[str, Any]) -> DocumentMeta:
    """Keep the known keys with a value: text trimmed and bounded, dates as ISO 8601, the
    page count a positive int."""
    meta = DocumentMeta()
    for key in ("title", "author", "subject", "language", "producer"):
        text = " ".join(str(raw.get(key) or "").split())
        if text:
            meta[key] = text[:META_VALUE_MAX_CHARS]
    for key in ("created", "modified"):
        date = iso_date(raw.get(key))
        if date:
            meta[key] = date  # type: ignore[literal-required]
    count = raw.get("page_count")
    try:
        if count is not None and int(count) > 0:
            meta["page_count"] = int(count)
    except (TypeError, ValueError):
        pass
    return meta


def _texts(root: Any) -> dict[str, str]:
    """Local name → text of a flat metadata element's children (first one wins)."""
    found: dict[str, str] = {}
    for child in root.iter():
        name = local_name(child.tag)
        text = (child.text or "").strip()
        if name and text and name not in found:
            found[name] = text
    return found


def ooxml_metadata(zf: zipfile.ZipFile, count_field: str | None = None) -> DocumentMeta:
    """Title, author, subject, dates and language from docProps/core.xml; the producer (the
    Application) and, when `count_field` is named (Pages, Slides), the page count from
    docProps/app.xml. A missing or unreadable part gives nothing, never a failure."""
    raw: dict[str, Any] = {}
    try:
        core = read_entry(zf, "docProps/core.xml", "document", required=False)
        if core:
            for name, value in _texts(parse_xml(core, "document's properties")).items():
                if name in _CORE_FIELDS:
                    raw[_CORE_FIELDS[name]] = value
        app = read_entry(zf, "docProps/app.xml", "document", required=False)
        if app:
            fields = _texts(parse_xml(app, "document's properties"))
            raw["producer"] = " ".join(
                part for part in (fields.get("Application"), fields.get("AppVersion")) if part
            )
            if count_field is not None:
                raw["page_count"] = fields.get(count_field)
    except ExtractionFatal:
        return clean_meta(raw)
    return clean_meta(raw)


def odf_metadata(zf: zipfile.ZipFile) -> DocumentMeta:
    """meta.xml of an OpenDocument file: title, author, subject, dates, language, generator
    and (text documents) the page count of its statistics."""
    raw: dict[str, Any] = {}
    try:
        data = read_entry(zf, "meta.xml", "document", required=False)
        if not data:
            return DocumentMeta()
        root = parse_xml(data, "document's metadata")
    except ExtractionFatal:
        return DocumentMeta()
    for name, value in _texts(root).items():
        key = _ODF_FIELDS.get(name)
        if key is not None and key not in raw:
            raw[key] = value
    for element in root.iter():
        if local_name(element.tag) == "document-statistic":
            for attr, value in element.attrib.items():
                if local_name(attr) == "page-count":
                    raw["page_count"] = value
    return clean_meta(raw)
