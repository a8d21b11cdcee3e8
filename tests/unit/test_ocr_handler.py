"""The OCR handler's pure parts, without a broker, a database or tesseract: the page's language,
where an image is, and the page.ocred a page's results become."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.ocr.handler import PageOcr, image_file, page_lang, too_small
from shared.blobstore import BlobStore
from shared.errors import PermanentError
from shared.events import ImageRef, ImagesExtracted, PageSource
from shared.settings import Settings

JOB = uuid.uuid4()


def image(uri: str, width: int = 900, height: int = 900) -> ImageRef:
    return ImageRef(image_id=uuid.uuid4(), uri=uri, width=width, height=height)


def test_the_page_language_is_the_events_or_the_default() -> None:
    settings = Settings(ocr_lang="deu")
    assert page_lang(ImagesExtracted(job_id=JOB, page=1, images=[], lang=""), settings) == "deu"
    event = ImagesExtracted(job_id=JOB, page=1, images=[], lang="eng+fra")
    assert page_lang(event, settings) == "eng+fra"
    with pytest.raises(PermanentError, match="'../etc' is not a valid OCR language code."):
        page_lang(ImagesExtracted(job_id=JOB, page=1, images=[], lang="../etc"), settings)


async def test_a_missing_image_fails_the_job_with_a_sentence(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    uri = blobs.put_bytes(b"\x89PNG\r\n\x1a\n")
    async with image_file(blobs, image(uri), 1, 3) as path:
        assert path.is_file()
    with pytest.raises(PermanentError) as missing:
        async with image_file(blobs, image("blob://sha256/" + "0" * 64), 2, 3):
            pass
    assert missing.value.reason == (
        "Image 2 of page 3 is missing from storage, so the page cannot be OCRed."
    )
    with pytest.raises(PermanentError):
        async with image_file(blobs, image("file:///etc/passwd"), 1, 3):
            pass


def test_icons_are_skipped() -> None:
    settings = Settings(ocr_min_image_side=48, ocr_min_image_area=10_000)
    assert too_small(image("blob://x", 40, 900), settings)
    assert too_small(image("blob://x", 90, 100), settings)  # sides fine, area too small
    assert not too_small(image("blob://x", 100, 100), settings)


def test_a_page_becomes_one_page_ocred() -> None:
    settings = Settings(chunk_max_chars=1200)
    event = ImagesExtracted(job_id=JOB, page=4, images=[])
    page = PageOcr(
        texts=["First image text.", "  ", "Second image text."],
        errors=["OCR of image 2 failed: The image could not be read."],
        ocred=2,
        skipped=1,
        seconds=1.23456,
    )
    ocred = page.event(event, settings)
    assert (ocred.job_id, ocred.page) == (JOB, 4)
    assert ocred.text == "First image text.\n\nSecond image text."
    assert [c.source for c in ocred.chunks] == [PageSource.OCR]
    assert (ocred.images_ocred, ocred.images_skipped, ocred.ocr_seconds) == (2, 1, 1.235)
    assert ocred.error == "Page 4: OCR of image 2 failed: The image could not be read."
    clean = PageOcr(texts=["Only text."], ocred=1).event(event, settings)
    assert clean.error is None and clean.text == "Only text."
    empty = PageOcr(skipped=3).event(event, settings)
    assert empty.text == "" and empty.chunks == [] and empty.images_skipped == 3
