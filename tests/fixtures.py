"""Documents the core suite makes for itself, so it never depends on the corpus."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def text_image(
    lines: list[str], *, size: tuple[int, int] = (1700, 700), font_size: int = 44
) -> Image.Image:
    """A clean 'scan': black text on white, large enough for tesseract at 300 dpi."""
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.truetype(FONT, font_size)
    except OSError:
        font = ImageFont.load_default()
    y = 60
    for line in lines:
        draw.text((80, y), line, fill=0, font=font)
        y += int(font_size * 1.6)
    return image


def pdf_with_pages(path: Path, pages: Sequence[str | Image.Image]) -> Path:
    """A PDF whose pages are text (a real text layer) or images (no text layer: a scan)."""
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=A4)
    width, height = A4
    for page in pages:
        if isinstance(page, Image.Image):
            buf = io.BytesIO()
            page.save(buf, format="PNG")
            buf.seek(0)
            scale = (width - 72) / page.width
            c.drawImage(
                ImageReader(buf),
                36,
                height - 36 - page.height * scale,
                width=page.width * scale,
                height=page.height * scale,
            )
        else:
            text = c.beginText(56, height - 72)
            text.setFont("Helvetica", 11)
            for line in page.splitlines():
                text.textLine(line)
            c.drawText(text)
        c.showPage()
    c.save()
    return path


def docx_file(path: Path, paragraphs: list[str]) -> Path:
    import docx

    document = docx.Document()
    for para in paragraphs:
        document.add_paragraph(para)
    document.save(str(path))
    return path
