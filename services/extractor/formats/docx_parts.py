"""DOCX: the parts around the body. Headers and footers (per section), footnotes, endnotes
and comments.

Headers, footers and comments are parts python-docx parses itself (its lxml parser resolves
no entities and fetches nothing); python-docx has no API for footnotes and endnotes, so their
parts' bytes are parsed with that same parser. In every part the unresolved entity references
are dropped as in the body (formats.docx.drop_entity_references).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.extractor.formats.docx_text import PAGE_BREAK, BodyText, NoteMarks, W

_R = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
# Note types that are Word's separator lines, not notes.
_NOT_NOTES = {"separator", "continuationSeparator", "continuationNotice"}
# Section types that do not start a new page (the type says how a section begins).
_SAME_PAGE_SECTIONS = {"continuous", "nextColumn"}
# A section's headers (and footers) in the order they are shown: the first page's, the others'.
_HEADER_ORDER = ("first", "default", "even")


def part_element(part: Any, clean: Callable[[Any], int]) -> Any:
    """The root element of a related part: python-docx's when it parsed the part, else its
    bytes parsed with python-docx's parser; `clean` removes its entity references."""
    from docx.oxml.parser import parse_xml

    element = getattr(part, "element", None)
    if element is None:
        element = parse_xml(part.blob)
    clean(element)
    return element


def related_element(document: Any, reltype: str, clean: Callable[[Any], int]) -> Any | None:
    """The root of the main part's one part of `reltype` (footnotes...), None without one."""
    for rel in document.part.rels.values():
        if rel.reltype == _RELS + reltype and not rel.is_external:
            return part_element(rel.target_part, clean)
    return None


def starts_new_page(section: Any) -> bool:
    """Whether the break before this section starts a page (next page, odd or even page; a
    section without a type is a next-page one). Continuous breaks only change the layout."""
    kind = section.find(W + "type")
    value = kind.get(W + "val", "nextPage") if kind is not None else "nextPage"
    return value not in _SAME_PAGE_SECTIONS


@dataclass(frozen=True)
class SectionText:
    header: str
    footer: str


class HeadersFooters:
    """Each section's header and footer text. A section that names none shows the previous
    one's; a text equal to the previous section's is given once (empty the second time)."""

    def __init__(self, document: Any, clean: Callable[[Any], int]) -> None:
        self.document = document
        self.clean = clean
        self.previous = SectionText("", "")

    def _part_text(self, section: Any, kind: str) -> str | None:
        """The section's `kind` (header/footer) text; None when it names no such part."""
        references = {
            ref.get(W + "type", "default"): ref.get(_R + "id")
            for ref in section.iterchildren(W + f"{kind}Reference")
        }
        if not references:
            return None
        texts: list[str] = []
        for which in _HEADER_ORDER:
            rid = references.get(which)
            part = self.document.part.related_parts.get(rid) if rid else None
            if part is None:
                continue
            root = part_element(part, self.clean)
            text = "\n\n".join(b for b in BodyText().blocks(root) if isinstance(b, str))
            if text and text not in texts:
                texts.append(text)
        return "\n\n".join(texts)

    def section(self, section: Any) -> SectionText:
        """This section's header and footer, each empty when it repeats the previous one."""
        header = self._part_text(section, "header")
        footer = self._part_text(section, "footer")
        current = SectionText(
            self.previous.header if header is None else header,
            self.previous.footer if footer is None else footer,
        )
        shown = SectionText(
            "" if current.header == self.previous.header else current.header,
            "" if current.footer == self.previous.footer else current.footer,
        )
        self.previous = current
        return shown


def notes_by_id(root: Any | None, tag: str) -> dict[str, Any]:
    """The notes (w:footnote or w:endnote) of a notes part by id, separators left out."""
    if root is None:
        return {}
    return {
        note.get(W + "id", ""): note
        for note in root.iterchildren(W + tag)
        if note.get(W + "type", "normal") not in _NOT_NOTES
    }


def note_text(note: Any, marks: NoteMarks) -> str:
    """A note's or a comment's paragraphs as one text (a note can reference another note,
    which then counts as referenced)."""
    blocks = BodyText(marks).blocks(note)
    return "\n".join(b for b in blocks if b is not PAGE_BREAK and isinstance(b, str))


def comment_label(comment: Any) -> str:
    author = " ".join(str(comment.get(W + "author", "")).split())
    return f"Comment ({author})" if author else "Comment"
