"""DOCX: the body read into pages. An explicit page break or a section break that starts a
new page ends a page; each section's header opens its first page and its footer closes its
last one; a page's footnotes (and, when asked for, its comments) follow its text; endnotes
follow the last page's text. A page can still be longer than a page should be: the caller
cuts it by size (formats.paged_section_records)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.extractor.formats.docx_parts import (
    HeadersFooters,
    SectionText,
    comment_label,
    note_text,
    notes_by_id,
    related_element,
    starts_new_page,
)
from services.extractor.formats.docx_text import PAGE_BREAK, BodyText, W, endnote_label

# Section properties in these are not the body's section breaks (Word never writes them there).
_NOT_BODY = {W + "tbl", W + "txbxContent"}


def body_sections(body: Any) -> list[Any]:
    """The body's section properties in order: one per section break (in a paragraph's
    properties), then the body's own, which is the last section's."""
    return [
        element
        for element in body.iter(W + "sectPr")
        if not any(ancestor.tag in _NOT_BODY for ancestor in element.iterancestors())
    ]


class DocxPager:
    """Collects the body's blocks into pages; `count` is called with the characters added so
    far, so an over-long document fails before it is all in memory."""

    def __init__(
        self,
        document: Any,
        clean: Callable[[Any], int],
        count: Callable[[int], None],
        *,
        comments: bool,
    ) -> None:
        self.document = document
        self.body = document.element.body
        self.reader = BodyText()
        self.marks = self.reader.marks
        self.count = count
        self.total = 0
        self.footnotes = notes_by_id(related_element(document, "footnotes", clean), "footnote")
        self.endnotes = notes_by_id(related_element(document, "endnotes", clean), "endnote")
        comments_root = related_element(document, "comments", clean) if comments else None
        self.comments = notes_by_id(comments_root, "comment") if comments else None
        self.sections = body_sections(self.body)
        self.section_index = 0
        self.headers = HeadersFooters(document, clean)
        self.section_text = SectionText("", "")
        self.pages: list[str] = []
        self.current: list[str] = []
        self.footnotes_done = 0
        self.comments_done = 0

    def read(self) -> list[str]:
        """The pages, empty ones left out (one empty page for a document without text)."""
        self._start_section()
        for block in self.reader.blocks(self.body, self._after_paragraph):
            if block is PAGE_BREAK:
                self._end_page()
            else:
                assert isinstance(block, str)
                self._add(block)
        self._end_page(footer=self.section_text.footer, last=True)
        return [page for page in self.pages if page] or [""]

    def _add(self, text: str) -> None:
        if not text:
            return
        self.total += len(text) + 2
        self.count(self.total)
        self.current.append(text)

    def _start_section(self) -> None:
        if self.section_index < len(self.sections):
            self.section_text = self.headers.section(self.sections[self.section_index])
        self._add(self.section_text.header)

    def _after_paragraph(self, paragraph: Any) -> None:
        """A paragraph whose properties hold a w:sectPr ends its section: the footer, then a
        new page unless the next section is continuous, then the next section's header."""
        properties = paragraph.find(W + "pPr")
        if properties is None or properties.find(W + "sectPr") is None:
            return
        footer = self.section_text.footer
        self.section_index += 1
        following = self.sections[self.section_index : self.section_index + 1]
        if following and starts_new_page(following[0]):
            self._end_page(footer=footer)
        else:
            self._add(footer)
        self._start_section()

    def _end_page(self, *, footer: str = "", last: bool = False) -> None:
        """Close the page: its notes after its text, then the footer that closes it."""
        for text in self._page_notes(last):
            self._add(text)
        self._add(footer)
        self.pages.append("\n\n".join(self.current))
        self.current = []

    def _page_notes(self, last: bool) -> list[str]:
        """The footnotes referenced on this page (and the notes they reference), its comments
        when asked for, and on the last page the endnotes."""
        out: list[str] = []
        while self.footnotes_done < len(self.marks.footnotes):
            note_id = self.marks.footnotes[self.footnotes_done]
            self.footnotes_done += 1
            note = self.footnotes.get(note_id)
            if note is not None:
                out.append(f"[{self.footnotes_done}] {note_text(note, self.marks)}".rstrip())
        if self.comments is not None:
            while self.comments_done < len(self.marks.comments):
                comment_id = self.marks.comments[self.comments_done]
                self.comments_done += 1
                comment = self.comments.get(comment_id)
                if comment is not None:
                    text = note_text(comment, self.marks)
                    out.append(f"{comment_label(comment)}: {text}".rstrip())
        if last:
            done = 0
            while done < len(self.marks.endnotes):
                note = self.endnotes.get(self.marks.endnotes[done])
                done += 1
                if note is not None:
                    out.append(f"[{endnote_label(done)}] {note_text(note, self.marks)}".rstrip())
        return out
