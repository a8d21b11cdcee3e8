"""Images (PNG, JPEG, TIFF): every frame is a page with no text layer, stored as a PNG scan
for OCR. The pixel limit is checked from the header, before any pixel is decoded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from services.extractor.formats import Record
from services.extractor.formats.pdf import short, to_png
from services.extractor.spec import (
    ExtractionFatal,
    ExtractSpec,
    image_record,
    meta_record,
    page_record,
)
from shared.blobstore import BlobStore

log = logging.getLogger(__name__)


def open_image(path: str, max_pixels: int) -> Any:
    from PIL import Image

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


def extract_image(spec: ExtractSpec, blobs: BlobStore) -> Iterator[Record]:
    from PIL import ImageSequence

    image = open_image(spec.path, spec.max_image_pixels)
    frames = frame_count(image)
    if frames > spec.max_pages:
        raise ExtractionFatal(
            f"The image has {frames} pages, more than the limit of {spec.max_pages}."
        )
    width, height = image.size
    if width * height > spec.max_image_pixels:
        raise ExtractionFatal(
            f"The image is {width}×{height} pixels, more than the limit of "
            f"{spec.max_image_pixels} pixels."
        )
    yield meta_record(spec.format, frames)
    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        if number > frames:
            break
        width, height = frame.size
        if width * height > spec.max_image_pixels:
            raise ExtractionFatal(
                f"Page {number} of the image is {width}×{height} pixels, more than the limit of "
                f"{spec.max_image_pixels} pixels."
            )
        images: list[dict[str, Any]] = []
        error = None
        if spec.ocr != "never":
            try:
                frame.load()
                if frames == 1 and image.format == "PNG":
                    # Already what tesseract reads: store the upload's bytes, no re-encode.
                    with open(spec.path, "rb") as fh:
                        uri = blobs.put_bytes(fh.read())
                else:
                    uri = blobs.put_bytes(to_png(frame))
                images.append(image_record(uri, width, height, "page-scan"))
            except Exception as exc:
                error = f"Page {number} of the image could not be decoded: {short(exc)}."
        yield page_record(number, "", has_text_layer=False, images=images, error=error)
