"""Which embedded images are OCRed (pdf_image_gate), and that the ones refused never leave the
extractor: no blob, no image record."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFilter
from pypdf import PdfReader

from services.extractor.formats.pdf_image_gate import (
    LAYOUT_SIDE,
    PHOTO_MIDTONE_SHARE,
    layout_copy,
    likely_holds_text,
    midtone_share,
    ocr_copy,
    ocr_max_pixels,
    tesseract_text_blocks,
)
from services.extractor.formats.pdf_images import embedded_images
from services.extractor.spec import ExtractSpec
from tests.fixtures import pdf_with_pages, text_image


def photo_like(size: tuple[int, int] = (400, 300), seed: int = 7) -> Image.Image:
    """Continuous tone: blurred random blobs of every grey level, as a photograph has."""
    rng = random.Random(seed)
    image = Image.new("L", size, 128)
    draw = ImageDraw.Draw(image)
    for _ in range(300):
        x, y = rng.randrange(size[0]), rng.randrange(size[1])
        r = rng.randrange(5, 60)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=rng.randrange(256))
    return image.filter(ImageFilter.GaussianBlur(12)).convert("RGB")


def diagram() -> Image.Image:
    return text_image(["Perceived Usefulness", "Behavioral Intention to Use"], size=(900, 300))


def test_text_is_likely_text_and_a_photograph_is_not() -> None:
    assert likely_holds_text(diagram())
    assert not likely_holds_text(photo_like())
    assert not likely_holds_text(Image.new("RGB", (500, 400), (40, 90, 200)))  # a flat fill


def test_cheap_tests_spare_layout_analysis() -> None:
    calls: list[Any] = []

    def counting(copy: Any) -> int:
        calls.append(copy)
        return 1

    assert midtone_share(layout_copy(photo_like())) > PHOTO_MIDTONE_SHARE
    assert not likely_holds_text(photo_like(), counting)
    assert not likely_holds_text(Image.new("L", (300, 300), 255), counting)
    assert calls == []
    assert likely_holds_text(diagram(), counting)
    assert len(calls) == 1 and calls[0].mode == "L"


def test_layout_analysis_finds_text_blocks() -> None:
    assert tesseract_text_blocks(layout_copy(diagram())) >= 1
    assert tesseract_text_blocks(layout_copy(Image.new("L", (600, 400), 255))) == 0


def test_layout_copy_is_grey_downscaled_and_on_white_paper() -> None:
    copy = layout_copy(Image.new("RGB", (4000, 1000), "white"))
    assert copy.mode == "L" and copy.size == (LAYOUT_SIDE, LAYOUT_SIDE // 4)
    # Black text on a transparent background reads as text on paper, not black on black.
    rgba = Image.new("RGBA", (900, 300), (0, 0, 0, 0))
    rgba.paste(diagram().convert("RGBA"), mask=diagram().point(lambda v: 255 - v))
    assert likely_holds_text(rgba)


def test_ocr_copy_downscales_to_a_page_at_the_ocr_resolution() -> None:
    limit = ocr_max_pixels(300)
    assert 8_500_000 < limit < 8_800_000  # A4 at 300 dpi
    small = Image.new("L", (2000, 3000))
    assert ocr_copy(small, limit) is small
    big = ocr_copy(Image.new("L", (6000, 9000)), limit)
    assert big.width * big.height <= limit
    assert abs(big.width / big.height - 6000 / 9000) < 0.01


def test_only_images_with_text_leave_the_extractor(tmp_path: Path) -> None:
    pdf = pdf_with_pages(tmp_path / "pictures.pdf", [photo_like((900, 600)), diagram()])
    reader = PdfReader(str(pdf))
    stored: list[bytes] = []

    class Blobs:
        def put_bytes(self, data: bytes) -> str:
            stored.append(data)
            return f"blob://{len(stored)}"

    spec = ExtractSpec(path=str(pdf), format="pdf", blob_dir=str(tmp_path))
    seen: set[Any] = set()
    photo = embedded_images(reader.pages[0], spec, Blobs(), seen)  # type: ignore[arg-type]
    text = embedded_images(reader.pages[1], spec, Blobs(), seen)  # type: ignore[arg-type]
    assert photo == [] and len(text) == 1 and len(stored) == 1
    assert text[0]["kind"] == "embedded" and text[0]["width"] == 900
