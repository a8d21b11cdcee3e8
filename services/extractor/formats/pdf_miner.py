"""pdfminer.six, the third PDF engine: it reads a page only when pdfium's text and pypdf's both
look wrong (pdf_checks). It places each glyph by its own metrics and groups glyphs into words
and lines by their positions, so it gets right the vertical and oddly spaced fonts that pypdf
breaks into letters ("Sout h Caroli na") and pdfium spaces letter by letter; it is ~2.5x slower
than pypdf, which is why it is the last resort and not the careful engine."""

from __future__ import annotations

import io
import itertools
import logging
import time
from typing import Any

from services.extractor.formats import short
from services.extractor.formats.pdf_checks import careful_suspicion
from services.extractor.normalize import content_chars, normalize_text

log = logging.getLogger(__name__)

# A page whose content stream is larger is not given to pdfminer (pure Python: a drawing of
# millions of operators would take minutes); nor are pages once pdfminer has spent this much
# CPU time on the document. Each bounds the cost of a hostile or huge PDF; the page keeps the
# text the other engines read.
MINER_MAX_CONTENT_BYTES = 2_000_000
MINER_CPU_BUDGET_SECONDS = 30.0
# pdfminer's text replaces the other when it holds at least this share of its letters and
# digits: a word broken apart by pypdf has the same letters, a reading that lost text fewer.
MINER_MIN_CONTENT_SHARE = 0.8


class MinerPages:
    """pdfminer opened on demand (most PDFs never need it); its page tree walked as far as a
    page asked for, once."""

    def __init__(self, path: str, password: str | None) -> None:
        self.path = path
        self.password = password
        self.cpu_seconds = 0.0
        # Fonts of pages whose pdfminer text was not kept: a later page drawn with the same
        # font objects would be read no better (a merged report repeats such pages).
        self.unhelpful_fonts: set[tuple[int, int]] = set()
        self._file: Any = None
        self._pages: list[Any] = []
        self._more: Any = None
        self._resources: Any = None

    def _page(self, index: int) -> Any:
        if self._file is None:
            from pdfminer.pdfdocument import PDFDocument
            from pdfminer.pdfinterp import PDFResourceManager
            from pdfminer.pdfpage import PDFPage
            from pdfminer.pdfparser import PDFParser

            self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
            document = PDFDocument(PDFParser(self._file), password=self.password or "")
            self._more = PDFPage.create_pages(document)
            # One resource manager per document: its font cache spares re-reading the fonts
            # a later page shares.
            self._resources = PDFResourceManager(caching=True)
        if index >= len(self._pages):
            self._pages += itertools.islice(self._more, index + 1 - len(self._pages))
        return self._pages[index]

    def text(self, index: int) -> str:
        """The page's text, laid out as pdfminer's extract_text does (default LAParams)."""
        from pdfminer.converter import TextConverter
        from pdfminer.layout import LAParams
        from pdfminer.pdfinterp import PDFPageInterpreter

        started = time.process_time()
        try:
            page = self._page(index)
            out = io.StringIO()
            device = TextConverter(self._resources, out, laparams=LAParams())
            try:
                PDFPageInterpreter(self._resources, device).process_page(page)
            finally:
                device.close()
            return out.getvalue()
        finally:
            self.cpu_seconds += time.process_time() - started

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def miner_may_read(page: Any, miner: MinerPages) -> bool:
    """Whether the page draws with fonts (a scan has none: nothing for pdfminer to find), its
    content is small enough for a pure-Python engine, and the document's budget is not spent."""
    if miner.cpu_seconds >= MINER_CPU_BUDGET_SECONDS:
        return False
    try:
        if not page["/Resources"].get_object()["/Font"].get_object():
            return False
        contents = page.get_contents()
        return contents is not None and len(contents.get_data()) <= MINER_MAX_CONTENT_BYTES
    except Exception:
        return False


def third_reading(
    page: Any, index: int, miner: MinerPages, current: str, fonts: frozenset[tuple[int, int]]
) -> str:
    """pdfminer's text of a page that pdfium and pypdf both read badly (`current` is the better
    of their two texts), when pdfminer's passes the check theirs failed; else `current`.
    `fonts`: the page's font objects (pdf.page_font_ids)."""
    if fonts and fonts <= miner.unhelpful_fonts or not miner_may_read(page, miner):
        return current
    try:
        text = normalize_text(miner.text(index))
    except Exception as exc:  # pdfminer is the last resort: its failure costs nothing
        log.warning("pdfminer could not read page %d: %s", index + 1, short(exc))
        return current
    chosen = choose_miner_text(text, current)
    if chosen is current:
        miner.unhelpful_fonts |= fonts
    return chosen


def choose_miner_text(miner_text: str, current: str) -> str:
    """pdfminer's text when it looks right and holds (nearly) as many letters and digits as the
    other engines' text; the other engines' text otherwise."""
    if careful_suspicion(miner_text) is not None:
        return current
    if content_chars(miner_text) < MINER_MIN_CONTENT_SHARE * content_chars(current):
        return current
    return miner_text
