"""Markdown: the source text as it is written (headings, lists and tables keep their marks,
so the Markdown export is the document itself), decoded like plain text; cut into pages of
bounded size between paragraphs like plain text (spec.flowing_page_chars). The title
is the first level-1 heading, or a front matter `title:`."""

from __future__ import annotations

import re
from collections.abc import Iterator

from services.extractor.formats import Record, paged_text_records
from services.extractor.formats.containers import clean_meta
from services.extractor.formats.plain import read_text
from services.extractor.normalize import normalize_text
from services.extractor.spec import DocumentMeta, ExtractSpec

_FRONT_MATTER = re.compile(r"\A---\n(.*?)\n(?:---|\.\.\.)\n", re.S)
_FRONT_FIELD = re.compile(r"^(title|author|date|lang|language|subject)\s*:\s*(.+)$", re.M)
_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)


def markdown_metadata(text: str) -> DocumentMeta:
    raw: dict[str, str] = {}
    front = _FRONT_MATTER.match(text)
    if front is not None:
        for key, value in _FRONT_FIELD.findall(front.group(1)):
            name = {"date": "created", "lang": "language"}.get(key, key)
            raw.setdefault(name, value.strip().strip("\"'"))
    if "title" not in raw and (heading := _H1.search(text)) is not None:
        raw["title"] = heading.group(1)
    return clean_meta(raw)


def extract_markdown(spec: ExtractSpec) -> Iterator[Record]:
    text = normalize_text(read_text(spec))
    yield from paged_text_records(
        "md", text, spec.flowing_page_chars, metadata=markdown_metadata(text)
    )
