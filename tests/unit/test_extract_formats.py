"""The per-format extraction functions, on generated documents (no bus, no child process)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import TEXT_PAGE_MAX_CHARS, extract
from services.extractor.normalize import normalize_text
from services.extractor.spec import ExtractionFatal, ExtractSpec
from shared.blobstore import BlobStore
from tests.unit.extractor_fixtures import (
    docx_file,
    encrypted_pdf,
    image_only_pdf,
    text_pdf,
    tiff_two_frames,
)

PAGES = [
    "Alpha page talks about invoices and totals.\nSecond line of the alpha page.",
    "Bravo page covers shipping addresses in detail.",
    "Charlie page closes the report with a summary.",
]


def run(path: Path, fmt: str, tmp_path: Path, **kw: Any) -> list[dict[str, Any]]:
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(tmp_path / "blobs"), **kw)
    return list(extract(spec))


def pages_of(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "page"]


def test_normalize_folds_ligatures_and_drops_controls() -> None:
    assert normalize_text("ﬁnal\x00 ﬂow\x07\r\nnext\u00ad") == "final flow\nnext"
    assert normalize_text("ﻻ") == "لا"  # Arabic presentation form -> letters


def test_pdf_three_pages_text(tmp_path: Path) -> None:
    records = run(text_pdf(tmp_path / "t.pdf", PAGES), "pdf", tmp_path)
    metadata = records[0].pop("metadata")
    assert records[0] == {"type": "meta", "format": "pdf", "pages_total": 3}
    assert metadata["producer"].startswith("ReportLab") and metadata["page_count"] == 3
    assert metadata["created"].endswith("+00:00"), "a PDF date read as ISO 8601"
    pages = pages_of(records)
    assert [p["page"] for p in pages] == [1, 2, 3]
    for page, want in zip(pages, PAGES, strict=True):
        assert page["text"].split() == want.split()
        assert page["has_text_layer"] is True
        assert page["images"] == []
        assert page["error"] is None


def test_image_only_pdf_is_rendered_for_ocr(tmp_path: Path) -> None:
    records = run(image_only_pdf(tmp_path / "scan.pdf"), "pdf", tmp_path, ocr_dpi=100)
    (page,) = pages_of(records)
    assert page["has_text_layer"] is False
    (image,) = page["images"]
    assert image["kind"] == "page-scan"
    # Letter at 100 dpi is 850 x 1100 pixels.
    assert (image["width"], image["height"]) == (850, 1100)
    png = BlobStore(tmp_path / "blobs").read_bytes(image["uri"])
    assert png.startswith(b"\x89PNG")


def test_render_is_scaled_under_the_pixel_limit(tmp_path: Path) -> None:
    records = run(
        image_only_pdf(tmp_path / "scan.pdf"),
        "pdf",
        tmp_path,
        ocr_dpi=300,
        max_image_pixels=1_000_000,
    )
    (image,) = pages_of(records)[0]["images"]
    assert image["width"] * image["height"] <= 1_000_000
    assert image["width"] > 800


def test_ocr_modes_on_text_pdf(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", PAGES[:1])
    always = pages_of(run(pdf, "pdf", tmp_path, ocr="always", ocr_dpi=72))[0]
    assert [i["kind"] for i in always["images"]] == ["page-scan"]
    scan = image_only_pdf(tmp_path / "scan.pdf")
    never = pages_of(run(scan, "pdf", tmp_path, ocr="never"))[0]
    assert never["images"] == []


def test_encrypted_pdf_passwords(tmp_path: Path) -> None:
    plain = text_pdf(tmp_path / "p.pdf", PAGES[:2])
    locked = encrypted_pdf(tmp_path / "locked.pdf", plain, "s3cret")
    with pytest.raises(ExtractionFatal, match="encrypted; submit it again with its password"):
        run(locked, "pdf", tmp_path)
    with pytest.raises(ExtractionFatal, match="password given for this PDF is wrong"):
        run(locked, "pdf", tmp_path, password="nope")
    pages = pages_of(run(locked, "pdf", tmp_path, password="s3cret"))
    assert pages[1]["text"].split() == PAGES[1].split()


def test_pdf_page_limit(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", PAGES)
    with pytest.raises(ExtractionFatal, match="3 pages, more than the limit of 2"):
        run(pdf, "pdf", tmp_path, max_pages=2)


def test_damaged_pdf_is_a_readable_fatal(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj <<>> endobj\ngarbage without xref\n")
    with pytest.raises(ExtractionFatal, match=r"^The PDF is damaged and could not be read: "):
        run(path, "pdf", tmp_path)


def test_docx_paragraphs_and_tables_in_order(tmp_path: Path) -> None:
    records = run(docx_file(tmp_path / "d.docx"), "docx", tmp_path)
    assert records[0]["pages_total"] == 1
    text = pages_of(records)[0]["text"]
    assert text == (
        "Quarterly Report\n\nRevenue grew in every region.\n\n"
        "Region | Revenue\nNorth | 120\n\nClosing remarks follow the table."
    )


def test_docx_char_limit(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFatal, match="more text than the limit of 20 characters"):
        run(docx_file(tmp_path / "d.docx"), "docx", tmp_path, max_extracted_chars=20)


def test_html_main_text_without_navigation(tmp_path: Path) -> None:
    article = " ".join(
        f"The harbour study paragraph {i} explains tides, moorings and cargo handling in depth."
        for i in range(12)
    )
    html = f"""<!DOCTYPE html><html><head><title>Port</title>
    <script>var secret = "SCRIPTSECRET";</script></head><body>
    <nav><ul><li><a href="/a">HomeNavLink</a></li><li><a href="/b">AboutNavLink</a></li></ul></nav>
    <article><h1>Harbour Study</h1><p>{article}</p><p>Second paragraph closes it.</p></article>
    <footer>FooterCopyright 2024</footer><img src="http://127.0.0.1:1/x.png"></body></html>"""
    path = tmp_path / "p.html"
    path.write_text(html)
    text = pages_of(run(path, "html", tmp_path))[0]["text"]
    assert "harbour study paragraph 11" in text
    assert "HomeNavLink" not in text and "SCRIPTSECRET" not in text


def test_csv_rows_keep_their_header(tmp_path: Path) -> None:
    rows = "\n".join(f"p{i};{20 + i};Oslo" for i in range(45))
    path = tmp_path / "t.csv"
    path.write_text("name;age;city\n" + rows + "\n")
    text = pages_of(run(path, "csv", tmp_path))[0]["text"]
    lines = text.split("\n")
    assert lines[0] == "name, age, city"
    assert lines[1] == "name: p0; age: 20; city: Oslo"
    assert lines[21] == ""  # a block break every 20 rows, so chunks cut between rows
    assert "name: p44; age: 64; city: Oslo" in lines


def test_latin1_txt_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    body = "Crème brûlée à la française, déjà vu, garçon, naïve façade.\n" * 5
    path.write_bytes(body.encode("latin-1"))
    text = pages_of(run(path, "txt", tmp_path))[0]["text"]
    assert "Crème brûlée à la française" in text and "\ufffd" not in text


def test_txt_char_limit(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("word " * 100)
    with pytest.raises(ExtractionFatal, match="more text than the limit of 100 characters"):
        run(path, "txt", tmp_path, max_extracted_chars=100)


def test_long_txt_is_cut_into_bounded_pages_between_paragraphs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph {i} tells of ledgers, invoices and totals." * 20 for i in range(300)]
    path = tmp_path / "long.txt"
    path.write_text("\n\n".join(paragraphs))
    records = run(path, "txt", tmp_path)
    pages = pages_of(records)
    assert records[0] == {"type": "meta", "format": "txt", "pages_total": len(pages)}
    assert len(pages) > 1 and [p["page"] for p in pages] == list(range(1, len(pages) + 1))
    assert all(0 < len(p["text"]) <= TEXT_PAGE_MAX_CHARS for p in pages)
    # Cut between paragraphs: the pages joined as the result joins them give the text back.
    assert "\n\n".join(p["text"] for p in pages) == "\n\n".join(paragraphs)


def test_empty_txt_is_one_empty_page(tmp_path: Path) -> None:
    path = tmp_path / "blank.txt"
    path.write_text("\n\n  \n")
    pages = pages_of(run(path, "txt", tmp_path))
    assert [(p["page"], p["text"], p["has_text_layer"]) for p in pages] == [(1, "", False)]


def test_two_frame_tiff_is_two_page_scans(tmp_path: Path) -> None:
    records = run(tiff_two_frames(tmp_path / "s.tif"), "tiff", tmp_path)
    assert records[0] == {"type": "meta", "format": "tiff", "pages_total": 2}
    pages = pages_of(records)
    assert [(p["page"], p["has_text_layer"]) for p in pages] == [(1, False), (2, False)]
    sizes = [(p["images"][0]["width"], p["images"][0]["height"]) for p in pages]
    assert sizes == [(200, 100), (300, 150)]
    assert all(p["images"][0]["kind"] == "page-scan" for p in pages)


def test_image_over_pixel_limit_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFatal, match="more than the limit of 10000 pixels"):
        run(tiff_two_frames(tmp_path / "s.tif"), "tiff", tmp_path, max_image_pixels=10_000)
