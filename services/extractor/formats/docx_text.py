"""DOCX: the text of WordprocessingML content (a body, a header, a note, a comment, a text box,
a table cell) in document order, read from the XML itself.

python-docx's `Paragraph.text` sees only runs and hyperlinks: it drops content controls
(w:sdt), text boxes (w:txbxContent) and nested tables, so the tree is walked here instead.

What a block container yields (`Blocks`): paragraph and table text, and PAGE_BREAK where the
author put an explicit one (w:br w:type="page", or a paragraph's w:pageBreakBefore).
w:lastRenderedPageBreak is ignored on purpose: it is where one renderer last laid out a page
when the file was saved (not an author's break); other producers omit it, an edit by another
program leaves it stale, and a table row that spans two pages carries one in every cell
(docs/decisions/1020).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_MC = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
_MATH = "{http://schemas.openxmlformats.org/officeDocument/2006/math}"


class _PageBreak:
    def __repr__(self) -> str:
        return "PAGE_BREAK"


PAGE_BREAK: Final = _PageBreak()
Block = str | _PageBreak

# Inline elements that stand for a character.
_CHARACTERS = {
    W + "tab": "\t",
    W + "ptab": "\t",
    W + "cr": "\n",
    W + "noBreakHyphen": "-",
}
# Subtrees with no text of the document: properties, deleted or moved-away text (the text
# stays where it was moved to), field codes, and the Fallback copy of an mc:AlternateContent
# (a text box is stored twice: DrawingML in the Choice, VML in the Fallback).
_SKIPPED = {
    W + "pPr",
    W + "rPr",
    W + "sdtPr",
    W + "sdtEndPr",
    W + "del",
    W + "delText",
    W + "moveFrom",
    W + "instrText",
    W + "delInstrText",
    _MC + "Fallback",
}
_TEXT = {W + "t", _MATH + "t"}


@dataclass
class NoteMarks:
    """The notes and comments referenced so far, in reference order: footnotes and endnotes
    get the number a reader sees ([1], [2]...), comments are only remembered."""

    footnotes: list[str] = field(default_factory=list)
    endnotes: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    def mark(self, tag: str, note_id: str) -> str:
        """The marker to put in the text for a reference, after recording it."""
        if tag == W + "footnoteReference":
            self.footnotes.append(note_id)
            return f"[{len(self.footnotes)}]"
        if tag == W + "endnoteReference":
            self.endnotes.append(note_id)
            return f"[{endnote_label(len(self.endnotes))}]"
        self.comments.append(note_id)
        return ""


def endnote_label(number: int) -> str:
    """Endnotes are numbered i, ii, iii... as Word does by default, so their markers never
    read as a footnote's. Hand-written: nine lines do not justify a dependency."""
    out = ""
    for value, letters in (
        (1000, "m"),
        (900, "cm"),
        (500, "d"),
        (400, "cd"),
        (100, "c"),
        (90, "xc"),
        (50, "l"),
        (40, "xl"),
        (10, "x"),
        (9, "ix"),
        (5, "v"),
        (4, "iv"),
        (1, "i"),
    ):
        count, number = divmod(number, value)
        out += letters * count
    return out


_REFERENCES = {W + "footnoteReference", W + "endnoteReference", W + "commentReference"}


class BodyText:
    """Walks block containers; `marks` records the note and comment references it passes."""

    def __init__(self, marks: NoteMarks | None = None) -> None:
        self.marks = marks if marks is not None else NoteMarks()

    def blocks(
        self, container: Any, on_paragraph: Callable[[Any], None] | None = None
    ) -> Iterator[Block]:
        """Paragraphs, tables and content controls directly in `container`, in order, with
        the text boxes anchored in a paragraph right after it. `on_paragraph` is called after
        each paragraph at this level (the body's section breaks hang on paragraphs)."""
        for child in container.iterchildren():
            yield from self.block(child, on_paragraph)

    def block(
        self, element: Any, on_paragraph: Callable[[Any], None] | None = None
    ) -> Iterator[Block]:
        """One block-level element's blocks (nothing for properties and unknown elements)."""
        tag = element.tag
        if tag == W + "p":
            yield from self.paragraph(element)
            if on_paragraph is not None:
                on_paragraph(element)
        elif tag == W + "tbl":
            text = self.table_text(element)
            if text:
                yield text
        elif tag in (W + "sdt", W + "customXml"):
            content = element.find(W + "sdtContent") if tag == W + "sdt" else element
            if content is not None:
                yield from self.blocks(content, on_paragraph)

    def paragraph(self, element: Any) -> Iterator[Block]:
        """The paragraph's text, cut at its page breaks, then its text boxes' blocks."""
        properties = element.find(W + "pPr")
        if properties is not None and is_on(properties.find(W + "pageBreakBefore")):
            yield PAGE_BREAK
        pieces: list[str] = []
        boxes: list[Any] = []
        for item in self.inline(element, boxes):
            if item is PAGE_BREAK:
                yield from _non_empty("".join(pieces).strip())
                yield PAGE_BREAK
                pieces = []
            else:
                assert isinstance(item, str)
                pieces.append(item)
        yield from _non_empty("".join(pieces).strip())
        for box in boxes:
            yield from (block for block in self.blocks(box) if block is not PAGE_BREAK)

    def inline(self, element: Any, boxes: list[Any]) -> Iterator[Block]:
        """The characters below `element` in order (runs, hyperlinks, inline content
        controls, fields' results, smart tags...); a text box is put aside in `boxes`."""
        for child in element.iterchildren():
            tag = child.tag
            if not isinstance(tag, str) or tag in _SKIPPED:
                continue
            if tag in _TEXT:
                yield child.text or ""
            elif tag == W + "br":
                kind = child.get(W + "type")
                yield PAGE_BREAK if kind == "page" else "\n"
            elif tag in _CHARACTERS:
                yield _CHARACTERS[tag]
            elif tag in _REFERENCES:
                yield self.marks.mark(tag, child.get(W + "id", ""))
            elif tag == W + "txbxContent":
                boxes.append(child)
            elif tag == _MC + "AlternateContent":
                choice = child.find(_MC + "Choice")
                if choice is not None:
                    yield from self.inline(choice, boxes)
            else:
                yield from self.inline(child, boxes)

    def cell_text(self, cell: Any) -> str:
        """A cell's paragraphs joined by spaces; a table inside it in parentheses, its rows
        joined by '; ' (so it never reads as more cells of the outer row)."""
        parts: list[str] = []
        for child in cell.iterchildren():
            if child.tag == W + "tbl":
                rows = self.table_rows(child)
                if rows:
                    parts.append("(" + "; ".join(rows) + ")")
            else:
                # a row is one line: line breaks inside a cell become spaces
                parts.extend(
                    block.replace("\n", " ")
                    for block in self.block(child)
                    if isinstance(block, str)
                )
        return " ".join(part for part in parts if part)

    def table_rows(self, table: Any) -> list[str]:
        """One line per row, cells joined by ' | '. A merged cell is one w:tc in the XML, so
        it is shown once (a vertically merged one in its first row)."""
        lines: list[str] = []
        for row in _children_through_sdt(table, W + "tr"):
            cells = [self.cell_text(cell) for cell in _children_through_sdt(row, W + "tc")]
            if any(cells):
                lines.append(" | ".join(cells))
        return lines

    def table_text(self, table: Any) -> str:
        """A table as text: its rows as lines (the tables reader keeps them as data)."""
        return "\n".join(self.table_rows(table))


def _children_through_sdt(element: Any, tag: str) -> Iterator[Any]:
    """The `tag` children of `element`, also those wrapped in row- or cell-level content
    controls or custom XML."""
    for child in element.iterchildren():
        if child.tag == tag:
            yield child
        elif child.tag == W + "sdt":
            content = child.find(W + "sdtContent")
            if content is not None:
                yield from _children_through_sdt(content, tag)
        elif child.tag == W + "customXml":
            yield from _children_through_sdt(child, tag)


def _non_empty(text: str) -> Iterator[str]:
    if text:
        yield text


def is_on(element: Any) -> bool:
    """An OOXML on/off property: present and not val="0"/"false"/"off"."""
    if element is None:
        return False
    return element.get(W + "val", "true") not in ("0", "false", "off")
