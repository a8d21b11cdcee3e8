"""Images (PNG, JPEG, TIFF): every frame is a page with no text layer, handed to OCR as a scan.

Only the header is read here: the pixel limit and the page's size come from it, before any
pixel is decoded. A single-frame upload tesseract reads as it is (any PNG, a grey or RGB JPEG,
a plain TIFF) is not decoded at all: its page-scan record names the upload's own blob (an
uploaded document is already in the content-addressed store, so no byte is copied), and
tesseract reads exactly the file the `tesseract` CLI would, DPI included. Only the rest (the
frames of a multi-frame image, modes or codecs tesseract may not read) is decoded and stored as
a PNG (keeping the DPI). What that saves: docs/decisions/0405-extraction-shortcuts.md.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator
from typing import Any

# The plugins of the formats sniffed as images, imported with this module (in a warm child,
# before its job arrives): PIL otherwise imports all its ~40 plugins at the first TIFF (~25 ms).
from PIL import Image, JpegImagePlugin, PngImagePlugin, TiffImagePlugin  # noqa: F401

from services.extractor.formats import Record, fatal_if_limit, short
from services.extractor.spec import (
    ExtractionFatal,
    ExtractSpec,
    ImageRecord,
    image_record,
    meta_record,
    page_record,
)
from shared.blobstore import BlobStore

log = logging.getLogger(__name__)

# What tesseract (leptonica, libpng, libjpeg, libtiff) reads from the file itself, as PIL
# reports it. Anything else is decoded and re-encoded as PNG.
_JPEG_MODES = frozenset({"L", "RGB"})  # CMYK (often Adobe-inverted) is left to PIL
_TIFF_MODES = frozenset({"1", "L", "P", "RGB"})
_TIFF_COMPRESSIONS = frozenset(
    {
        "raw",
        "tiff_ccitt",
        "group3",
        "group4",
        "tiff_lzw",
        "packbits",
        "tiff_deflate",
        "tiff_adobe_deflate",
    }
)
_TIFF_BITS_PER_SAMPLE = 258
_TIFF_PLANAR_CONFIG = 284
_TIFF_TILE_WIDTH = 322
_TIFF_SAMPLE_FORMAT = 339


def open_image(path: str, max_pixels: int) -> Any:
    """The image with only its header read; PIL refuses one over twice `max_pixels` here."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ExtractionFatal(
            f"The image is larger than the limit of {max_pixels} pixels."
        ) from exc
    except Exception as exc:
        raise ExtractionFatal(f"The image is damaged and could not be read: {short(exc)}.") from exc


def frame_count(image: Any) -> int:
    try:
        return int(getattr(image, "n_frames", 1))
    except Exception as exc:
        raise ExtractionFatal(f"The image is damaged and could not be read: {short(exc)}.") from exc


def _tag_values(tags: Any, tag: int, default: int) -> tuple[Any, ...]:
    value = tags.get(tag, default)
    return tuple(value) if isinstance(value, tuple | list) else (value,)


def tesseract_reads_as_is(image: Any) -> bool:
    """Whether tesseract reads this (single-frame) file as well as our PNG of it."""
    fmt = image.format
    if fmt == "PNG":
        return True  # libpng reads every PNG colour type and bit depth
    if fmt == "JPEG":
        return image.mode in _JPEG_MODES
    if fmt == "TIFF":
        tags = getattr(image, "tag_v2", {})
        return (
            image.mode in _TIFF_MODES
            and image.info.get("compression") in _TIFF_COMPRESSIONS
            and all(b in (1, 2, 4, 8) for b in _tag_values(tags, _TIFF_BITS_PER_SAMPLE, 1))
            and all(f == 1 for f in _tag_values(tags, _TIFF_SAMPLE_FORMAT, 1))  # unsigned ints
            and _TIFF_TILE_WIDTH not in tags
            and _tag_values(tags, _TIFF_PLANAR_CONFIG, 1) == (1,)
        )
    return False


def document_blob_uri(spec: ExtractSpec, blobs: BlobStore) -> str | None:
    """The blob URI of the document itself when it is a file of the blob store, else None.

    An uploaded document is a content-addressed blob, `<blob_dir>/ab/cd/<sha256>`: its name is
    its digest, so an image record can name it without reading or copying a byte.
    """
    digest = os.path.basename(spec.path)
    try:
        stored = blobs.path_for(digest)
    except ValueError:
        return None
    try:
        if not os.path.samefile(stored, spec.path):
            return None
    except OSError:
        return None
    return blobs.uri_for(digest)


def store_document(spec: ExtractSpec, blobs: BlobStore) -> str:
    """A blob holding the document's bytes: the document's own, or a copy of a local file."""
    return document_blob_uri(spec, blobs) or blobs.put_file(spec.path)


def frame_png(frame: Any) -> bytes:
    """The decoded frame as a PNG, keeping its resolution so tesseract sees the DPI the file
    declares (as it would reading the file itself) rather than guessing one."""
    image = frame
    if image.mode in ("I", "F"):
        image = image.convert("L")
    elif image.mode not in ("1", "L", "LA", "RGB", "RGBA", "P", "I;16"):
        image = image.convert("RGB")
    params: dict[str, Any] = {}
    dpi = frame.info.get("dpi")
    try:
        if dpi and float(dpi[0]) > 0 and float(dpi[1]) > 0:
            params["dpi"] = (float(dpi[0]), float(dpi[1]))
    except (TypeError, ValueError, IndexError):
        pass
    buf = io.BytesIO()
    # Level 1: the blob lives for one OCR pass; level 6 took ~3x longer for ~15% fewer bytes.
    image.save(buf, format="PNG", optimize=False, compress_level=1, **params)
    return buf.getvalue()


def check_pixels(width: int, height: int, spec: ExtractSpec, page: int | None = None) -> None:
    if width * height > spec.max_image_pixels:
        what = "The image" if page is None else f"Page {page} of the image"
        raise ExtractionFatal(
            f"{what} is {width}×{height} pixels, more than the limit of "
            f"{spec.max_image_pixels} pixels."
        )


def extract_image(spec: ExtractSpec, blobs: BlobStore) -> Iterator[Record]:
    with open_image(spec.path, spec.max_image_pixels) as image:
        frames = frame_count(image)
        if frames > spec.max_pages:
            raise ExtractionFatal(
                f"The image has {frames} pages, more than the limit of {spec.max_pages}."
            )
        width, height = image.size
        check_pixels(width, height, spec)
        yield meta_record(spec.format, frames)
        if frames == 1:
            yield single_frame_page(image, spec, blobs)
            return
        for number in range(1, frames + 1):
            yield frame_page(image, number, spec, blobs)


def single_frame_page(image: Any, spec: ExtractSpec, blobs: BlobStore) -> Record:
    if spec.ocr == "never" or not tesseract_reads_as_is(image):
        return frame_page(image, 1, spec, blobs)
    width, height = image.size
    try:
        uri = store_document(spec, blobs)
    except OSError as exc:
        fatal_if_limit(exc)
        return page_record(
            1,
            "",
            has_text_layer=False,
            error=f"Page 1 of the image could not be stored for OCR: {short(exc)}.",
        )
    images = [image_record(uri, width, height, "page-scan")]
    return page_record(1, "", has_text_layer=False, images=images)


def frame_page(image: Any, number: int, spec: ExtractSpec, blobs: BlobStore) -> Record:
    """Page `number` (1-based): its frame decoded and stored as a PNG for OCR."""
    try:
        image.seek(number - 1)
    except Exception as exc:
        raise ExtractionFatal(f"The image is damaged and could not be read: {short(exc)}.") from exc
    width, height = image.size
    check_pixels(width, height, spec, number)
    images: list[ImageRecord] = []
    error = None
    if spec.ocr != "never":
        try:
            image.load()
            uri = blobs.put_bytes(frame_png(image))
            images.append(image_record(uri, width, height, "page-scan"))
        except Exception as exc:
            fatal_if_limit(exc)
            error = f"Page {number} of the image could not be decoded: {short(exc)}."
    return page_record(number, "", has_text_layer=False, images=images, error=error)
