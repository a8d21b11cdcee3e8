"""shared.sniff: formats decided from bytes, never from names."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from shared.sniff import sniff_bytes, sniff_path
from tests.unit.extractor_fixtures import docx_file, text_pdf, tiff_two_frames


def test_pdf_docx_and_tiff_by_content(tmp_path: Path) -> None:
    assert sniff_path(text_pdf(tmp_path / "a.bin", ["hello"])) == "pdf"
    assert sniff_path(docx_file(tmp_path / "a.dat")) == "docx"
    assert sniff_path(tiff_two_frames(tmp_path / "a.tif")) == "tiff"


def test_png_renamed_pdf_is_png(tmp_path: Path) -> None:
    path = tmp_path / "looks.pdf"
    Image.new("RGB", (10, 10)).save(path, format="PNG")
    assert sniff_path(path) == "png"


def test_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.new("RGB", (10, 10)).save(path, format="JPEG")
    assert sniff_path(path) == "jpeg"


def test_zip_that_is_not_docx_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "fake.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "just a zip")
    assert sniff_path(path) is None


def test_text_csv_and_html_are_told_apart() -> None:
    assert sniff_bytes(b"Just a sentence of prose.\nAnd another line of it.\n") == "txt"
    assert sniff_bytes(b"name,age,city\nAnn,31,Oslo\nBob,45,Rome\nCid,52,Lima\n") == "csv"
    assert sniff_bytes(b"<!DOCTYPE html><html><body><p>Hi</p></body></html>") == "html"
    assert sniff_bytes(b"<div><head><title>x</title></head><body>y</body></div>") == "html"


def test_binary_and_empty_are_unsupported() -> None:
    assert sniff_bytes(b"") is None
    assert sniff_bytes(bytes(range(256)) * 4) is None
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("word/document.xml", "<w:document/>")
    assert sniff_bytes(buf.getvalue(), zip_names=["word/document.xml"]) == "docx"
    assert sniff_bytes(buf.getvalue()) is None
