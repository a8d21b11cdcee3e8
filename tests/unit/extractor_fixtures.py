"""Documents generated for the extractor tests (reportlab, pypdf, Pillow, python-docx)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw


def text_pdf(path: Path, pages: list[str]) -> Path:
    """A PDF with one page per string, each drawn as real text (a text layer)."""
    from reportlab.lib.pagesizes import letter
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=letter)
    for text in pages:
        y = 720
        for line in text.split("\n"):
            c.drawString(72, y, line)
            y -= 16
        c.showPage()
    c.save()
    return path


def image_only_pdf(path: Path, text: str = "SCANNED PAGE") -> Path:
    """A one-page PDF whose only content is a picture of text (no text layer)."""
    from reportlab.lib.pagesizes import letter
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    img = Image.new("L", (800, 300), 255)
    ImageDraw.Draw(img).text((40, 120), text, fill=0)
    c = canvas.Canvas(str(path), pagesize=letter)
    c.drawImage(ImageReader(img), 72, 400, width=400, height=150)
    c.showPage()
    c.save()
    return path


def encrypted_pdf(path: Path, source: Path, password: str) -> Path:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(source).pages:
        writer.add_page(page)
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="AES-128")
    with open(path, "wb") as fh:
        writer.write(fh)
    return path


def docx_file(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Quarterly Report", level=1)
    d.add_paragraph("Revenue grew in every region.")
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Region"
    table.cell(0, 1).text = "Revenue"
    table.cell(1, 0).text = "North"
    table.cell(1, 1).text = "120"
    d.add_paragraph("Closing remarks follow the table.")
    d.save(str(path))
    return path


def tiff_two_frames(path: Path) -> Path:
    first = Image.new("L", (200, 100), 255)
    second = Image.new("L", (300, 150), 200)
    first.save(path, format="TIFF", save_all=True, append_images=[second])
    return path
