"""Decide a document's format from its bytes, never from its declared type. The name counts
once: a text that looks like Markdown is taken for Markdown more readily when it is named
`.md` (plain text and Markdown share every byte)."""

from __future__ import annotations

import csv
import io
import os
import re
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

from charset_normalizer import from_bytes

IMAGE_FORMATS = frozenset({"png", "jpeg", "tiff"})

_HEAD = 64 * 1024
ZIP_MAGIC = b"PK\x03\x04"
OFFICE_MARKER = "[Content_Types].xml"  # every Office Open XML package has it
DOCX_MAIN_PART = "word/document.xml"

# What a ZIP container may declare before anything opens it (a DOCX of the corpus has ~20
# entries, ~100 KB inflated, at ratios under 10).
ZIP_MAX_ENTRIES = 10_000
ZIP_MAX_UNCOMPRESSED_BYTES = 256 * 1024 * 1024
# Inflated / compressed, for the archive and for any entry over 1 MiB: deflate tops out near
# 1030 (zeros), while very repetitive text XML reaches ~200 (a valid DOCX, tested).
ZIP_MAX_RATIO = 500
_RATIO_MIN_BYTES = 1024 * 1024
# What zipfile raises for a damaged directory. NotImplementedError: a directory entry that
# claims a ZIP version zipfile does not know (found by fuzzing; it was a 500 in ingest).
UNREADABLE_ZIP = (
    zipfile.BadZipFile,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    EOFError,
)


# What an Office Open XML package declares as its main part's content type, in
# [Content_Types].xml, by format (the macro-enabled and template variants included).
OOXML_MAIN_TYPES = {
    "docx": (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
        "application/vnd.ms-word.document.macroEnabled.main+xml",
        "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
    ),
    "xlsx": (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
        "application/vnd.ms-excel.template.macroEnabled.main+xml",
    ),
    "pptx": (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml",
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",
        "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",
        "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",
        "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml",
    ),
}
# The main part where [Content_Types].xml says nothing useful (hand-made packages).
OOXML_MAIN_PARTS = {
    "docx": DOCX_MAIN_PART,
    "xlsx": "xl/workbook.xml",
    "pptx": "ppt/presentation.xml",
}
# The `mimetype` entry of OpenDocument and EPUB containers (stored first, uncompressed).
ZIP_MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/epub+zip": "epub",
}
# Bounds on what the sniffer reads from inside a container.
_MIMETYPE_MAX_BYTES = 200
_CONTENT_TYPES_MAX_BYTES = 1024 * 1024

# Legacy binary Office files: an OLE2 compound file, told apart by the stream it holds.
OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
LEGACY_STREAMS = {
    "worddocument": "doc",
    "workbook": "xls",
    "book": "xls",
    "powerpoint document": "ppt",
}
LEGACY_FORMATS = frozenset(LEGACY_STREAMS.values())
LEGACY_NAMES = {"doc": "Word (.doc)", "xls": "Excel (.xls)", "ppt": "PowerPoint (.ppt)"}
# What a legacy file is converted to before it is read (services/extractor/formats/legacy.py).
LEGACY_TARGETS = {"doc": "docx", "xls": "xlsx", "ppt": "pptx"}
SOFFICE_NAMES = ("soffice", "libreoffice")

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdown", ".mkd")


def sniff_bytes(
    head: bytes,
    *,
    zip_names: list[str] | None = None,
    zip_format: str | None = None,
    filename: str | None = None,
) -> str | None:
    """Format of a document given its first bytes (64 KiB is plenty), or None if unsupported.

    For ZIP containers pass the member names, and the format the container declares
    (zip_container_format; see sniff_path); without them a ZIP is unsupported. The container
    is judged before any marker inside it: an Office package is Office even when `%PDF-`
    appears in its first KiB (a stored entry can begin with it). `filename` only tells
    Markdown from plain text, together with what the text looks like.
    """
    if not head:
        return None
    if head.startswith(ZIP_MAGIC) and (zip_format or zip_names):
        return zip_format or format_by_zip_names(zip_names or [])
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(ZIP_MAGIC):
        return None  # a ZIP that is not an Office, OpenDocument or EPUB package
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{\\rtf"):
        return "rtf"
    return _sniff_text(head, filename)


def format_by_zip_names(names: list[str]) -> str | None:
    """An Office package's format by its main part's name (when its content types are not
    known); None for any other ZIP."""
    present = set(names)
    if OFFICE_MARKER not in present and DOCX_MAIN_PART not in present:
        return None
    for fmt, part in OOXML_MAIN_PARTS.items():
        if part in present:
            return fmt
    return None


def zip_container_format(zf: zipfile.ZipFile) -> str | None:
    """What a ZIP container declares itself to be: an OpenDocument or EPUB `mimetype` entry,
    else an Office package's main part content type in [Content_Types].xml, else its main
    part's name. Reads at most two small entries (their declared sizes checked first)."""
    infos = {info.filename: info for info in zf.infolist()}
    mimetype = infos.get("mimetype")
    if mimetype is not None and mimetype.file_size <= _MIMETYPE_MAX_BYTES:
        declared = zf.read(mimetype).decode("ascii", "replace").strip()
        if declared in ZIP_MIMETYPES:
            return ZIP_MIMETYPES[declared]
    types = infos.get(OFFICE_MARKER)
    if types is not None and types.file_size <= _CONTENT_TYPES_MAX_BYTES:
        fmt = _ooxml_format(zf.read(types))
        if fmt is not None:
            return fmt
    return format_by_zip_names(list(infos))


def _ooxml_format(content_types: bytes) -> str | None:
    from defusedxml import ElementTree

    try:
        root = ElementTree.fromstring(content_types)
    except Exception:  # malformed or hostile XML (defusedxml refuses entities): not declared
        return None
    declared = {el.get("ContentType", "") for el in root.iter() if el.tag.endswith("Override")}
    for fmt, main_types in OOXML_MAIN_TYPES.items():
        if declared.intersection(main_types):
            return fmt
    return None


def legacy_office_format(path: Path | str) -> str | None:
    """ "doc", "xls" or "ppt" for a legacy binary Office file (an OLE2 compound file holding
    that program's main stream), else None (an encrypted OOXML package is OLE2 too)."""
    import olefile

    try:
        with olefile.OleFileIO(str(path)) as ole:
            streams = {"/".join(entry).lower() for entry in ole.listdir()}
    except Exception:  # not a readable compound file
        return None
    for stream, fmt in LEGACY_STREAMS.items():
        if stream in streams:
            return fmt
    return None


def legacy_converter() -> str | None:
    """The LibreOffice executable that converts legacy Office files, or None when it is not
    installed (DOCPIPE_SOFFICE names it explicitly)."""
    import shutil

    explicit = os.environ.get("DOCPIPE_SOFFICE")
    if explicit:
        return shutil.which(explicit)
    return next((found for name in SOFFICE_NAMES if (found := shutil.which(name))), None)


def _sniff_text(head: bytes, filename: str | None = None) -> str | None:
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return None
    best = from_bytes(head).best()
    if best is None:
        return None
    text = str(best)
    if not text.strip():
        return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if printable / max(len(text), 1) < 0.95:
        return None
    lowered = text.lstrip("\ufeff \t\r\n")[:2048].lower()
    if lowered.startswith(("<!doctype html", "<html")) or (
        lowered.startswith("<") and ("<body" in lowered or "<head" in lowered)
    ):
        return "html"
    if looks_like_email(text):
        return "eml"
    if looks_like_markdown(text, filename):
        return "md"
    if _looks_like_csv(text):
        return "csv"
    return "txt"


_HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,76}):[ \t]*(.*)$")
# An email's header block names at least one of these besides From (RFC 5322 requires From
# and Date; a saved message nearly always has Subject or To as well).
_EMAIL_HEADERS = frozenset({"date", "subject", "to", "message-id", "mime-version"})


def looks_like_email(text: str) -> bool:
    """An RFC 5322 message: it opens with a block of header lines (continuations indented),
    among them From and another message header, ended by a blank line."""
    names: set[str] = set()
    lines = text.lstrip("\ufeff").split("\n")
    if lines and lines[0].startswith("From "):
        lines = lines[1:]  # an mbox "From sender date" line
    for count, raw in enumerate(lines):
        line = raw.rstrip("\r")
        if not line:
            break
        if line[0] in " \t" and names:
            continue
        match = _HEADER_LINE.match(line)
        if match is None or count > 500:
            return False
        names.add(match.group(1).lower())
    else:
        return False  # no blank line ends the headers (or no body)
    return "from" in names and bool(names & _EMAIL_HEADERS)


_MD_HEADING = re.compile(r"^#{1,6}[ \t]+\S", re.M)
_MD_SETEXT = re.compile(r"^\S.*\n(=+|-+)[ \t]*$", re.M)
_MD_CONSTRUCTS = (
    re.compile(r"^[ \t]{0,3}(?:[-*+]|\d{1,9}[.)])[ \t]+\S", re.M),  # list item
    re.compile(r"\[[^\]\n]+\]\([^)\s]+\)"),  # inline link
    re.compile(r"^[ \t]{0,3}(```|~~~)", re.M),  # fenced code
    re.compile(r"(\*\*|__)\S[^\n]*?\S\1"),  # strong emphasis
    re.compile(r"^[ \t]{0,3}>[ \t]?\S", re.M),  # block quote
    re.compile(r"^\|.*\|[ \t]*\n\|[ \t:|-]+\|", re.M),  # table
)


def looks_like_markdown(text: str, filename: str | None = None) -> bool:
    """Markdown rather than plain text. Named .md (or .markdown): any heading or other
    Markdown construct will do. Otherwise it must look it: two ATX headings and another
    construct (a plain-text file with a `# comment` line stays text)."""
    headings = len(_MD_HEADING.findall(text)) + len(_MD_SETEXT.findall(text))
    constructs = sum(bool(pattern.search(text)) for pattern in _MD_CONSTRUCTS)
    if filename and filename.lower().endswith(MARKDOWN_SUFFIXES):
        return headings + constructs > 0
    return len(_MD_HEADING.findall(text)) >= 2 and constructs >= 1


def _looks_like_csv(text: str) -> bool:
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if len(lines) < 2:
        return False
    # The last line of a 64 KiB head may be cut off mid-row.
    sample = "\n".join(lines[:-1] if len(lines) > 2 else lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return False
    rows = list(csv.reader(io.StringIO(sample), dialect))
    widths = [len(r) for r in rows if r]
    if not widths or widths[0] < 2:
        return False
    consistent = sum(w == widths[0] for w in widths) / len(widths)
    return consistent >= 0.9


def sniff_path(path: Path | str, filename: str | None = None) -> str | None:
    """The document's format by its bytes (`filename`, the name the client gave, only tells
    Markdown from plain text). A legacy Office file counts only when its converter is
    installed (unsupported_reason names it when it is not)."""
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    names: list[str] | None = None
    container: str | None = None
    if head.startswith(ZIP_MAGIC):
        names = []
        if zip_problem(path) is None:
            try:
                with zipfile.ZipFile(path) as zf:
                    names = zf.namelist()
                    container = zip_container_format(zf)
            except UNREADABLE_ZIP:
                pass
    if head.startswith(OLE_MAGIC):
        legacy = legacy_office_format(path)
        return legacy if legacy is not None and legacy_converter() is not None else None
    return sniff_bytes(head, zip_names=names, zip_format=container, filename=filename)


def zip_declared_entries(path: Path | str) -> int | None:
    """How many entries a ZIP's end-of-central-directory record declares (ZIP64 included),
    read from its tail without parsing the directory; None when there is no such record."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (65_535 + 22 + 20)))
        tail = fh.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 22:
        return None
    (entries,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if entries != 0xFFFF:
        return int(entries)
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator < 0:
        return int(entries)
    (record_offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
    with open(path, "rb") as fh:
        fh.seek(record_offset)
        record = fh.read(56)
    if not record.startswith(b"PK\x06\x06") or len(record) < 40:
        return None
    (entries64,) = struct.unpack("<Q", record[32:40])
    return int(entries64)


def zip_sizes_problem(infos: Iterable[zipfile.ZipInfo]) -> str | None:
    """A sentence when the entries' declared sizes make the archive a bomb, else None.
    (zipfile never inflates an entry past its declared size, so these bound what is read.)"""
    total = compressed = 0
    for count, info in enumerate(infos, start=1):
        total += info.file_size
        compressed += info.compress_size
        if count > ZIP_MAX_ENTRIES:
            return f"The ZIP container has more than {ZIP_MAX_ENTRIES} entries."
        if info.file_size > _RATIO_MIN_BYTES and info.file_size > ZIP_MAX_RATIO * max(
            info.compress_size, 1
        ):
            return (
                f"The ZIP container's entry {info.filename[:100]!r} inflates more than "
                f"{ZIP_MAX_RATIO} times (a ZIP bomb?)."
            )
    if total > ZIP_MAX_UNCOMPRESSED_BYTES:
        limit = ZIP_MAX_UNCOMPRESSED_BYTES // (1024 * 1024)
        return f"The ZIP container inflates to more than {limit} MB."
    if total > _RATIO_MIN_BYTES and total > ZIP_MAX_RATIO * max(compressed, 1):
        return f"The ZIP container inflates more than {ZIP_MAX_RATIO} times (a ZIP bomb?)."
    return None


def zip_problem(path: Path | str) -> str | None:
    """Why a ZIP container must not be opened (entry count, inflated size, ratio), or None.
    The entry count is read first from the archive's last bytes, so a directory of millions
    of entries is refused before zipfile parses it."""
    try:
        declared = zip_declared_entries(path)
        if declared is not None and declared > ZIP_MAX_ENTRIES:
            return f"The ZIP container has more than {ZIP_MAX_ENTRIES} entries."
        with zipfile.ZipFile(path) as zf:
            return zip_sizes_problem(zf.infolist())
    except UNREADABLE_ZIP:
        return None  # not a readable ZIP: whoever opens it says so


MEDIA_TYPES = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "odp": "application/vnd.oasis.opendocument.presentation",
    "epub": "application/epub+zip",
    "eml": "message/rfc822",
    "rtf": "application/rtf",
    "md": "text/markdown",
    "doc": "application/msword",
    "xls": "application/vnd.ms-excel",
    "ppt": "application/vnd.ms-powerpoint",
    "html": "text/html",
    "csv": "text/csv",
    "txt": "text/plain",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}


UNSUPPORTED_REASON = (
    "This file type is not supported (judged by its content); supported types are: "
    "PDF, DOCX, XLSX, PPTX, ODT, ODS, ODP, EPUB, EML, RTF, Markdown, HTML, CSV, TXT, PNG, "
    "JPEG, TIFF (and DOC, XLS, PPT where LibreOffice is installed)."
)


def unsupported_reason(path: Path | str) -> str:
    """A sentence saying why a file that sniffs as unsupported cannot be processed."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not head:
        return "The document is empty (0 bytes)."
    if head == OLE_MAGIC:
        legacy = legacy_office_format(path)
        if legacy is not None:
            return (
                f"This is a legacy {LEGACY_NAMES[legacy]} file; reading it needs LibreOffice "
                "(soffice) to convert it, and that converter is not installed on this server. "
                f"Save it as {LEGACY_TARGETS[legacy].upper()} or PDF."
            )
        # Password-protected OOXML shares this container.
        return (
            "This is an encrypted Office file (or an unreadable legacy one), which is not "
            "supported; remove the password or save it as DOCX or PDF."
        )
    if head.startswith(ZIP_MAGIC):
        problem = zip_problem(path)
        if problem is not None:
            return problem
        return (
            "The file is a ZIP archive but not a readable Office, OpenDocument or EPUB "
            "document (it may be damaged or truncated, or be a plain archive)."
        )
    return UNSUPPORTED_REASON
