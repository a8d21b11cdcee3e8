"""PDF images: the images a page draws (embedded XObjects, nested forms included), decoded,
kept when they likely hold text (pdf_image_gate), and stored as PNG blobs for OCR."""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from services.extractor.formats import fatal_if_limit, short
from services.extractor.formats.pdf_image_gate import likely_holds_text, ocr_copy, ocr_max_pixels
from services.extractor.spec import ExtractSpec, ImageRecord, image_record
from shared.blobstore import BlobStore

log = logging.getLogger(__name__)

MAX_EMBEDDED_IMAGES_PER_PAGE = 10
_XOBJECT_DEPTH = 8


def to_png(image: Any) -> bytes:
    """Encode as PNG, converting modes PNG cannot hold (CMYK, YCbCr, 32-bit, float)."""
    if image.mode in ("I", "F"):
        image = image.convert("L")
    elif image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", "I;16"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    # Level 1: the blob lives for one OCR pass; level 6 took ~3x longer for ~15% fewer bytes.
    image.save(buf, format="PNG", optimize=False, compress_level=1)
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


def xobject_image_keys(
    obj: Any, ancestors: tuple[str, ...] = (), seen: set[Any] | None = None
) -> list[Any]:
    """Image XObject keys as pypdf's `page.images.keys()` names them (a str, or a path through
    forms), without the inline images: pypdf finds those by parsing the whole content stream,
    which costs more than extracting the page's text, and inline images are skipped anyway."""
    seen = set() if seen is None else seen
    ref = getattr(obj, "indirect_reference", None)
    if ref is not None:
        if (ref.idnum, ref.generation) in seen:
            return []
        seen.add((ref.idnum, ref.generation))
    try:
        resources = obj["/Resources"].get_object()
        xobjects = resources["/XObject"].get_object()
    except Exception:
        return []
    keys: list[Any] = []
    for name in xobjects:
        entry = xobjects[name].get_object()
        path = (*ancestors, name)
        if entry.get("/Subtype") == "/Image":
            keys.append(name if not ancestors else list(path))
        elif entry.get("/Subtype") == "/Form" and len(path) <= _XOBJECT_DEPTH:
            keys.extend(xobject_image_keys(entry, path, seen))
    return keys


def decode_image(page: Any, key: Any) -> Any:
    """The PIL image of an XObject key; pypdf's public `page.images[key]` would first list
    every image, parsing the content stream again."""
    getter = getattr(page, "_get_image", None)
    file = getter(key) if getter is not None else page.images[key]
    return file.image


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
) -> list[ImageRecord]:
    """Large enough embedded images of a text page that likely hold text (pdf_image_gate),
    downscaled to what OCR needs and stored as PNG; undecodable ones skipped.

    `seen` holds the image objects taken from earlier pages: a logo on every page, or a
    resource dictionary shared by all pages, is OCRed once, not once per page.
    """
    out: list[ImageRecord] = []
    drawn = drawn_xobjects(page)
    for key in xobject_image_keys(page):
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
            image = decode_image(page, key)
            if image is None or not likely_holds_text(image):
                continue  # a photograph, a drawing, an icon: nothing for OCR to read
            image = ocr_copy(image, ocr_max_pixels(spec.ocr_dpi))
            uri = blobs.put_bytes(to_png(image))
            out.append(image_record(uri, image.width, image.height, "embedded"))
        except Exception as exc:
            fatal_if_limit(exc)
            log.warning("skipped an undecodable image %s: %s", key, short(exc))
    return out
