"""PDF: pypdfium2 reads the text layer page by page (fast); pypdf (careful, ~10x slower) reads
only the pages where a cheap check finds pdfium's text suspicious, and pdfminer.six only those
where pypdf's text fails the check too (pdf_checks, pdf_miner); pypdfium2 renders pages that
need OCR. A spec may name a page range, so two children can extract one large PDF at once."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Iterator
from typing import Any

from pypdf import PasswordType, PdfReader

from services.extractor.formats import Record, fatal_if_limit, short
from services.extractor.formats.containers import clean_meta
from services.extractor.formats.pdf_checks import (
    GLYPH_NAMES_SHARE,
    careful_suspicion,
    garbage_ratio,
    glyph_name_share,
    suspicion,
)
from services.extractor.formats.pdf_images import embedded_images, image_keys, to_png
from services.extractor.formats.pdf_miner import MinerPages, third_reading
from services.extractor.normalize import content_chars, has_text_layer, normalize_text
from services.extractor.spec import (
    DocumentMeta,
    ExtractionFatal,
    ExtractSpec,
    ImageRecord,
    image_record,
    meta_record,
    page_record,
)
from shared.blobstore import BlobStore

log = logging.getLogger(__name__)


def damaged(exc: BaseException) -> ExtractionFatal:
    if isinstance(exc, RecursionError):
        return ExtractionFatal(
            "The PDF is damaged and could not be read: its structure is too deeply nested."
        )
    return ExtractionFatal(f"The PDF is damaged and could not be read: {short(exc)}.")


def open_pdf(path: str, password: str | None) -> tuple[PdfReader, str | None]:
    """Open and, if needed, decrypt; returns the reader and the password that worked."""
    try:
        reader = PdfReader(path, strict=False)
        encrypted = reader.is_encrypted
    except Exception as exc:
        raise damaged(exc) from exc
    if not encrypted:
        return reader, None
    # An empty user password is common: the file opens for anyone but restricts editing.
    for candidate in ([password] if password else []) + [""]:
        try:
            result = reader.decrypt(candidate)
        except NotImplementedError as exc:
            raise ExtractionFatal(
                f"The PDF uses an encryption method that is not supported: {short(exc)}."
            ) from exc
        except Exception as exc:
            raise damaged(exc) from exc
        if result != PasswordType.NOT_DECRYPTED:
            return reader, candidate
    if password:
        raise ExtractionFatal("The password given for this PDF is wrong.")
    raise ExtractionFatal("The PDF is encrypted; submit it again with its password.")


def count_pages(reader: PdfReader) -> int:
    try:
        return len(reader.pages)
    except Exception as exc:
        raise damaged(exc) from exc


class PdfiumPages:
    """pypdfium2 opened on demand: most text PDFs never need it."""

    def __init__(self, path: str, password: str | None) -> None:
        self.path = path
        self.password = password
        self._doc: Any = None

    def page(self, index: int) -> Any:
        if self._doc is None:
            import pypdfium2 as pdfium

            self._doc = pdfium.PdfDocument(self.path, password=self.password)
        return self._doc[index]

    def text(self, index: int) -> str:
        page = self.page(index)
        textpage = page.get_textpage()
        try:
            return str(textpage.get_text_range())
        finally:
            textpage.close()
            page.close()

    def render_png(self, index: int, dpi: int, max_pixels: int) -> tuple[bytes, int, int]:
        page = self.page(index)
        try:
            width_pt, height_pt = page.get_size()
            if width_pt <= 0 or height_pt <= 0:
                raise ValueError("the page has no area")
            scale = dpi / 72
            if width_pt * height_pt * scale * scale > max_pixels:
                scale = math.sqrt(max_pixels / (width_pt * height_pt)) * 0.999
            bitmap = page.render(scale=scale, grayscale=True)
            image = bitmap.to_pil()
            bitmap.close()
        finally:
            page.close()
        return to_png(image), image.width, image.height

    def close(self) -> None:
        if self._doc is not None:
            self._doc.close()


def risky_fonts(page: Any) -> bool:
    """Fonts whose text pdfium is known to drop: a simple font whose custom /Differences
    encoding overrides its ToUnicode map, or a Type3 font. Reads only the font dictionaries
    (no content stream), so it costs microseconds."""
    try:
        fonts = page["/Resources"].get_object()["/Font"].get_object()
    except Exception:
        return False
    try:
        for ref in fonts.values():
            font = ref.get_object()
            subtype = font.get("/Subtype")
            if subtype == "/Type3":
                return True
            encoding = font.get("/Encoding")
            encoding = encoding.get_object() if encoding is not None else None
            if isinstance(encoding, dict) and "/Differences" in encoding and "/ToUnicode" in font:
                return True
    except Exception:
        return True  # a font dictionary we cannot read: let the careful engine look
    return False


def page_font_ids(page: Any) -> frozenset[tuple[int, int]]:
    """The indirect font objects of the page's own resources (empty when there are none or
    they cannot be read)."""
    try:
        fonts = page["/Resources"].get_object()["/Font"].get_object()
        refs = [fonts.raw_get(name) for name in fonts]
        return frozenset((r.idnum, r.generation) for r in refs if hasattr(r, "idnum"))
    except Exception:
        return frozenset()


class UndecodableFonts:
    """Fonts whose text pypdf rendered as glyph names on an earlier page of this document.

    Decoding depends only on a font's encoding and ToUnicode map, so a later page drawn with
    the same font objects would give glyph names again: the careful engine is skipped there
    (a report or a merged document repeats such pages by the dozen).
    """

    def __init__(self) -> None:
        self.fonts: set[tuple[int, int]] = set()

    def covers(self, fonts: frozenset[tuple[int, int]]) -> bool:
        return bool(fonts) and fonts <= self.fonts

    def add(self, fonts: frozenset[tuple[int, int]]) -> None:
        self.fonts |= fonts


def careful_text(reader: PdfReader, index: int, fast: str | None) -> tuple[str, bool]:
    """pypdf's text, or pdfium's (`fast`) when pypdf's is garbage or much shorter; and whether
    pypdf gave undecodable glyph names."""
    text = normalize_text(reader.pages[index].extract_text() or "")
    if glyph_name_share(text) > GLYPH_NAMES_SHARE:
        # "/g18/g152/g135...": undecodable, and worse than anything pdfium read.
        return (fast if fast is not None else ""), True
    return _better(text, fast), False


def _better(text: str, fast: str | None) -> str:
    """pypdf's `text` unless pdfium's (`fast`) is clearly better."""
    if has_text_layer(text) and garbage_ratio(text) < 0.3:
        return text
    if fast is None:
        return text
    alt = fast
    if garbage_ratio(alt) < garbage_ratio(text) and content_chars(alt) >= content_chars(text) * 0.5:
        return alt
    if content_chars(alt) > content_chars(text) * 1.5 and garbage_ratio(alt) < 0.3:
        return alt
    return text


def page_text(
    reader: PdfReader,
    index: int,
    pdfium: PdfiumPages,
    undecodable: UndecodableFonts,
    miner: MinerPages,
) -> str:
    """pdfium's text, unless it looks wrong; then the better of pypdf's and pdfium's, unless
    that looks wrong too; then pdfminer's if it looks right."""
    try:
        fast: str | None = normalize_text(pdfium.text(index))
    except Exception as exc:
        log.warning("pdfium could not read page %d: %s", index + 1, short(exc))
        fast = None
    page = reader.pages[index]
    if fast is not None and suspicion(fast) is None and not risky_fonts(page):
        return fast
    fonts = page_font_ids(page)
    if fast is not None and undecodable.covers(fonts):
        return fast
    text, glyph_names = careful_text(reader, index, fast)
    if glyph_names:
        undecodable.add(fonts)
    elif careful_suspicion(text) is not None:
        text = third_reading(page, index, miner, text, fonts)
    return text


def page_images_possible(page: Any) -> bool:
    """Whether the page's resources name any image or form XObject (a form may hold images):
    a dictionary lookup that spares the content-stream scan on pages of plain text."""
    try:
        xobjects = page["/Resources"].get_object().get("/XObject")
        if xobjects is None:
            return False
        return any(
            ref.get_object().get("/Subtype") in ("/Image", "/Form")
            for ref in xobjects.get_object().values()
        )
    except Exception:
        return True


def extract_pdf(spec: ExtractSpec, blobs: BlobStore) -> Iterator[Record]:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = spec.max_image_pixels
    reader, password = open_pdf(spec.path, spec.password)
    pages_total = count_pages(reader)
    if pages_total == 0:
        raise ExtractionFatal("The PDF has no pages.")
    if pages_total > spec.max_pages:
        raise ExtractionFatal(
            f"The PDF has {pages_total} pages, more than the limit of {spec.max_pages}."
        )
    start, stop = page_range(spec, pages_total)
    metadata = pdf_metadata(reader, pages_total)
    yield meta_record("pdf", pages_total, first_page=start + 1, last_page=stop, metadata=metadata)
    pdfium = PdfiumPages(spec.path, password)
    # Per child: with a split document a logo repeated in both halves is OCRed twice at most.
    seen_images: set[Any] = set()
    undecodable = UndecodableFonts()
    miner = MinerPages(spec.path, password)
    try:
        for index in range(start, stop):
            yield _extract_page(reader, index, spec, blobs, pdfium, seen_images, undecodable, miner)
    finally:
        pdfium.close()
        miner.close()


def pdf_metadata(reader: PdfReader, pages_total: int) -> DocumentMeta:
    """The document information dictionary (title, author, subject, dates, producer) and the
    catalog's /Lang. A damaged dictionary gives what could be read, never a failure."""
    raw: dict[str, Any] = {"page_count": pages_total}
    try:
        info = reader.metadata
        if info is not None:
            raw.update(title=info.title, author=info.author, subject=info.subject)
            raw.update(created=info.creation_date_raw, modified=info.modification_date_raw)
            raw["producer"] = info.producer or info.creator
        lang = reader.root_object.get("/Lang")
        raw["language"] = lang.get_object() if lang is not None else None
    except Exception as exc:  # metadata is a courtesy: the text is what matters
        log.debug("unreadable PDF metadata: %s", exc)
    return clean_meta({k: (str(v) if v is not None else None) for k, v in raw.items()})


def page_range(spec: ExtractSpec, pages_total: int) -> tuple[int, int]:
    """The 0-based [start, stop) this child extracts: the range the spec names, else the
    first half of a document of at least spec.split_pages pages (the parent starts a second
    child on the rest as soon as it reads the meta record), else every page."""
    if spec.page_start or spec.page_stop is not None:
        stop = pages_total if spec.page_stop is None else min(spec.page_stop, pages_total)
        return min(spec.page_start, stop), stop
    if spec.split_pages and pages_total >= spec.split_pages:
        return 0, (pages_total + 1) // 2
    return 0, pages_total


def page_has_text_layer(text: str, page: Any) -> bool:
    """Enough text, or some text on a page with no image that could hold more."""
    if has_text_layer(text):
        return True
    return content_chars(text) > 0 and not image_keys(page)


def _extract_page(
    reader: PdfReader,
    index: int,
    spec: ExtractSpec,
    blobs: BlobStore,
    pdfium: PdfiumPages,
    seen_images: set[Any],
    undecodable: UndecodableFonts,
    miner: MinerPages,
) -> Record:
    number = index + 1
    problems: list[str] = []
    text = ""
    text_layer = False
    try:
        text = page_text(reader, index, pdfium, undecodable, miner)
        text_layer = page_has_text_layer(text, reader.pages[index])
    except Exception as exc:
        problems.append(f"its text could not be read ({short(exc)})")
    images: list[ImageRecord] = []
    if spec.ocr == "always" or (spec.ocr == "auto" and not text_layer):
        try:
            png, width, height = pdfium.render_png(index, spec.ocr_dpi, spec.max_image_pixels)
            images.append(image_record(blobs.put_bytes(png), width, height, "page-scan"))
        except Exception as exc:
            fatal_if_limit(exc)
            problems.append(f"it could not be rendered for OCR ({short(exc)})")
    elif spec.ocr == "auto" and page_images_possible(reader.pages[index]):
        try:
            images = embedded_images(reader.pages[index], spec, blobs, seen_images)
        except Exception as exc:
            fatal_if_limit(exc)
            log.warning("page %d: embedded images skipped: %s", number, short(exc))
    error = None
    if problems:
        print(f"page {number}: " + "; ".join(problems), file=sys.stderr)
        # Only a page that gave nothing usable is an error; otherwise OCR covers the gap.
        if not text and not images:
            error = f"Page {number} could not be read: " + "; ".join(problems) + "."
    return page_record(number, text, has_text_layer=text_layer, images=images, error=error)
