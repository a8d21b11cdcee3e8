"""EPUB: each chapter (an XHTML item of the spine, in reading order) a page, its text by the
HTML extractor (services.extractor.formats.html.main_text); the metadata from the package
document (OPF): title, creator, subject, language, date, modified.

The container, container.xml and the OPF are read with the ZIP checks and defusedxml; a
spine of more chapters than MAX_CHAPTERS is a sentence (the page limit applies too).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from services.extractor.formats import Record, check_chars
from services.extractor.formats.containers import (
    children,
    clean_meta,
    local_name,
    open_zip,
    parse_xml,
    read_entry,
)
from services.extractor.formats.headings import html_headings
from services.extractor.normalize import normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    meta_record,
    page_record,
)

WHAT = "e-book"
MAX_CHAPTERS = 5_000
_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/xml"})


def package_path(zf: Any) -> str:
    """Where META-INF/container.xml says the package document (OPF) is."""
    root = parse_xml(read_entry(zf, "META-INF/container.xml", WHAT), WHAT)
    for element in root.iter():
        if local_name(element.tag) == "rootfile" and element.get("full-path"):
            return str(element.get("full-path"))
    raise ExtractionFatal("The e-book is damaged: its container names no package document.")


def opf_metadata(opf: Any) -> DocumentMeta:
    raw: dict[str, Any] = {}
    for block in children(opf, "metadata"):
        for element in block:
            name = local_name(element.tag)
            text = (element.text or "").strip()
            if not text:
                continue
            if name in ("title", "subject", "language") and name not in raw:
                raw[name] = text
            elif name == "creator" and "author" not in raw:
                raw["author"] = text
            elif name == "date" and "created" not in raw:
                raw["created"] = text
            elif name == "meta" and element.get("property") == "dcterms:modified":
                raw["modified"] = text
            elif name == "publisher" and "producer" not in raw:
                raw["producer"] = text
    return clean_meta(raw)


def spine_paths(opf: Any, opf_path: str) -> list[str]:
    """The ZIP entry of each spine item that is a chapter (XHTML), in reading order."""
    base = posixpath.dirname(opf_path)
    manifest: dict[str, tuple[str, str]] = {}
    for block in children(opf, "manifest"):
        for item in children(block, "item"):
            href = item.get("href")
            if item.get("id") and href:
                path = posixpath.normpath(posixpath.join(base, unquote(href.split("#")[0])))
                manifest[item.get("id")] = (path, item.get("media-type", ""))
    paths: list[str] = []
    for block in children(opf, "spine"):
        for ref in children(block, "itemref"):
            entry = manifest.get(ref.get("idref", ""))
            if entry is not None and entry[1] in _XHTML_TYPES:
                paths.append(entry[0])
    if len(paths) > MAX_CHAPTERS:
        raise ExtractionFatal(
            f"The e-book has {len(paths)} chapters, more than the limit of {MAX_CHAPTERS}."
        )
    return paths


def chapter_text(data: bytes) -> str:
    from services.extractor.formats.html import main_text

    return normalize_text(main_text(data))


def extract_epub(spec: ExtractSpec) -> Iterator[Record]:
    with open_zip(spec.path, WHAT) as zf:
        opf_path = package_path(zf)
        opf = parse_xml(read_entry(zf, opf_path, WHAT), WHAT)
        metadata = opf_metadata(opf)
        chapters = spine_paths(opf, opf_path)
        if not chapters:
            raise ExtractionFatal("The e-book has no chapters in its reading order.")
        metadata["page_count"] = len(chapters)
        yield meta_record("epub", len(chapters), metadata=metadata)
        total = 0
        for number, path in enumerate(chapters, start=1):
            data = read_entry(zf, path, WHAT, required=False)
            if not data:
                error = f"Chapter {number} ({path[:100]}) is missing from the e-book."
                yield page_record(number, "", has_text_layer=False, error=error)
                continue
            text = chapter_text(data)
            total += len(text)
            check_chars(total, spec)
            headings = html_headings(data)
            yield page_record(number, text, has_text_layer=bool(text), headings=headings)
