"""PDF: pypdf reads the text layer page by page; pypdfium2 renders pages that need OCR and
stands in for pypdf on pages where pypdf returns garbage."""

from __future__ import annotations

import io
import logging
import math
import re
import sys
from collections.abc import Iterator
from typing import Any

from pypdf import PasswordType, PdfReader

from services.extractor.formats import Record
from services.extractor.normalize import content_chars, has_text_layer, normalize_text
from services.extractor.spec import (
    ExtractionFatal,
    ExtractSpec,
    image_record,
    meta_record,
    page_record,
)
from shared.blobstore import BlobStore

log = logging.getLogger(__name__)

MAX_EMBEDDED_IMAGES_PER_PAGE = 10
_XOBJECT_DEPTH = 8


def short(exc: BaseException, limit: int = 160) -> str:
    """A one-line description of an exception for a person to read."""
    detail = " ".join(str(exc).split()).rstrip(".") or type(exc).__name__
    if len(detail) > limit:
        detail = detail[: limit - 1] + "…"
    return detail


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


def garbage_ratio(text: str) -> float:
    """Share of visible characters that are replacement, private-use or unassigned glyphs."""
    visible = [ch for ch in text if not ch.isspace()]
    if not visible:
        return 0.0
    bad = sum(1 for ch in visible if ch == "\ufffd" or "\ue000" <= ch <= "\uf8ff")
    return bad / len(visible)


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


def to_png(image: Any) -> bytes:
    """Encode as PNG, converting modes PNG cannot hold (CMYK, YCbCr, 32-bit, float)."""
    if image.mode in ("I", "F"):
        image = image.convert("L")
    elif image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", "I;16"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def _image_xobject(page: Any, key: str | list[str]) -> Any:
    """The image XObject a pypdf image key (`/Im0`, or a path through forms) points at."""
    path = [key] if isinstance(key, str) else list(key)
    obj = page
    for name in path[:-1]:
        obj = obj["/Resources"].get_object()["/XObject"].get_object()[name].get_object()
    return obj["/Resources"].get_object()["/XObject"].get_object()[path[-1]].get_object()


def image_keys(page: Any) -> list[Any]:
    try:
        return list(page.images.keys())
    except Exception as exc:  # a damaged resource tree only costs the images
        log.warning("could not list images: %s", short(exc))
        return []


_DO = re.compile(rb"/([^\s/\[\]()<>{}%]+)\s*Do\b")


def drawn_xobjects(page: Any) -> set[str]:
    """Names of the XObjects the page's content stream paints (`/Name Do`)."""
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
    except Exception as exc:
        log.warning("could not read the content stream: %s", short(exc))
        return set()
    return {"/" + m.group(1).decode("latin-1") for m in _DO.finditer(data)}


def embedded_images(
    page: Any, spec: ExtractSpec, blobs: BlobStore, seen: set[Any]
) -> list[dict[str, Any]]:
    """Large enough embedded images of a text page, stored as PNG; undecodable ones skipped.

    `seen` holds the image objects taken from earlier pages: a logo on every page, or a
    resource dictionary shared by all pages, is OCRed once, not once per page.
    """
    out: list[dict[str, Any]] = []
    drawn = drawn_xobjects(page)
    for key in image_keys(page):
        if len(out) >= MAX_EMBEDDED_IMAGES_PER_PAGE:
            break
        if isinstance(key, str) and key.startswith("~"):
            continue  # inline images are small by nature (the PDF spec advises < 4 KB)
        if not isinstance(key, str) and len(key) > _XOBJECT_DEPTH:
            continue
        try:
            xobj = _image_xobject(page, key)
            ref = xobj.indirect_reference
            identity = (ref.idnum, ref.generation) if ref is not None else None
            if identity is not None and identity in seen:
                continue
            if (key if isinstance(key, str) else key[0]) not in drawn:
                continue  # listed in a (often shared) resource dictionary but not drawn here
            width, height = int(xobj["/Width"]), int(xobj["/Height"])
            if min(width, height) < spec.ocr_min_image_side:
                continue
            if width * height < spec.ocr_min_image_area or width * height > spec.max_image_pixels:
                continue
            if identity is not None:
                seen.add(identity)
            image = page.images[key].image
            if image is None:
                continue
            uri = blobs.put_bytes(to_png(image))
            out.append(image_record(uri, image.width, image.height, "embedded"))
        except Exception as exc:
            log.warning("skipped an undecodable image %s: %s", key, short(exc))
    return out


def page_text(reader: PdfReader, index: int, pdfium: PdfiumPages) -> str:
    """pypdf's text, or pdfium's when pypdf's is mostly garbage or much shorter."""
    text = normalize_text(reader.pages[index].extract_text() or "")
    if has_text_layer(text) and garbage_ratio(text) < 0.3:
        return text
    try:
        alt = normalize_text(pdfium.text(index))
    except Exception as exc:
        log.warning("pdfium text fallback failed on page %d: %s", index + 1, short(exc))
        return text
    if garbage_ratio(alt) < garbage_ratio(text) and content_chars(alt) >= content_chars(text) * 0.5:
        return alt
    if content_chars(alt) > content_chars(text) * 1.5 and garbage_ratio(alt) < 0.3:
        return alt
    return text


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
    yield meta_record("pdf", pages_total)
    pdfium = PdfiumPages(spec.path, password)
    seen_images: set[Any] = set()
    try:
        for index in range(pages_total):
            yield _extract_page(reader, index, spec, blobs, pdfium, seen_images)
    finally:
        pdfium.close()


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
) -> Record:
    number = index + 1
    problems: list[str] = []
    text = ""
    text_layer = False
    try:
        text = page_text(reader, index, pdfium)
        text_layer = page_has_text_layer(text, reader.pages[index])
    except Exception as exc:
        problems.append(f"its text could not be read ({short(exc)})")
    images: list[dict[str, Any]] = []
    if spec.ocr == "always" or (spec.ocr == "auto" and not text_layer):
        try:
            png, width, height = pdfium.render_png(index, spec.ocr_dpi, spec.max_image_pixels)
            images.append(image_record(blobs.put_bytes(png), width, height, "page-scan"))
        except Exception as exc:
            problems.append(f"it could not be rendered for OCR ({short(exc)})")
    elif spec.ocr == "auto":
        try:
            images = embedded_images(reader.pages[index], spec, blobs, seen_images)
        except Exception as exc:
            log.warning("page %d: embedded images skipped: %s", number, short(exc))
    error = None
    if problems:
        print(f"page {number}: " + "; ".join(problems), file=sys.stderr)
        # Only a page that gave nothing usable is an error; otherwise OCR covers the gap.
        if not text and not images:
            error = f"Page {number} could not be read: " + "; ".join(problems) + "."
    return page_record(number, text, has_text_layer=text_layer, images=images, error=error)
