"""DOCX made to break the extractor: entity references (internal, external, billion laughs)
lose no text and resolve nothing; ZIP containers are checked before they are opened; and a
DOCX with `%PDF-` in its first KiB is a DOCX."""

from __future__ import annotations

import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import extract
from services.extractor.spec import ExtractionFatal, ExtractSpec
from shared import sniff
from shared.sniff import (
    ZIP_MAX_ENTRIES,
    sniff_path,
    unsupported_reason,
    zip_declared_entries,
    zip_problem,
    zip_sizes_problem,
)
from tests.unit.extractor_fixtures import docx_file


def crafted_docx(path: Path, body_xml: str, doctype: str = "") -> Path:
    """A real DOCX whose body is replaced by `body_xml`, with `doctype` before its root."""
    base = docx_file(path.with_name(path.stem + "-base.docx"))
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "word/document.xml":
                text = data.decode()
                declaration, rest = text.split("?>", 1)
                start = rest.index("<w:body>") + len("<w:body>")
                end = rest.index("<w:sectPr")
                text = declaration + "?>" + doctype + rest[:start] + body_xml + rest[end:]
                data = text.encode()
            dst.writestr(item, data)
    return path


def paragraph(text: str) -> str:
    return f'<w:p><w:r><w:t xml:space="preserve">{text}</w:t></w:r></w:p>'


def page_text(path: Path, tmp_path: Path) -> str:
    spec = ExtractSpec(path=str(path), format="docx", blob_dir=str(tmp_path / "blobs"))
    records: list[dict[str, Any]] = list(extract(spec))
    (page,) = [r for r in records if r["type"] == "page"]
    return str(page["text"])


def test_text_after_an_entity_reference_is_kept(tmp_path: Path) -> None:
    path = crafted_docx(
        tmp_path / "entity.docx",
        paragraph("BEFORE &x; AFTER") + paragraph("&x;starts, ends&x;"),
        '<!DOCTYPE d [<!ENTITY x "INJECTED">]>',
    )
    text = page_text(path, tmp_path)
    assert "BEFORE" in text and "AFTER" in text, text
    assert "starts, ends" in text
    assert "INJECTED" not in text


def test_entities_in_tables_and_several_runs(tmp_path: Path) -> None:
    cell = "<w:tc><w:p><w:r><w:t>left &x; right</w:t></w:r></w:p></w:tc>"
    table = f"<w:tbl><w:tr>{cell}{cell}</w:tr></w:tbl>"
    runs = "<w:p><w:r><w:t>one &x;two</w:t></w:r><w:r><w:t>&x; three</w:t></w:r></w:p>"
    path = crafted_docx(
        tmp_path / "table.docx", table + runs, '<!DOCTYPE d [<!ENTITY x "INJECTED">]>'
    )
    text = page_text(path, tmp_path)
    assert "left  right | left  right" in text
    assert "one two three" in text
    assert "INJECTED" not in text


def test_external_entities_are_not_fetched(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    path = crafted_docx(
        tmp_path / "xxe.docx",
        paragraph("Read: &xxe; (end)"),
        f'<!DOCTYPE d [<!ENTITY xxe SYSTEM "{secret.as_uri()}">]>',
    )
    text = page_text(path, tmp_path)
    assert "TOP-SECRET-CONTENT" not in text
    assert "Read:" in text and "(end)" in text


def test_billion_laughs_is_refused_at_once(tmp_path: Path) -> None:
    """Nothing is expanded: libxml2 refuses the declarations' amplification outright."""
    levels = ['<!ENTITY l0 "ha">'] + [
        f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)
    ]
    path = crafted_docx(
        tmp_path / "laughs.docx",
        paragraph("laugh: &l9; done"),
        "<!DOCTYPE d [" + "".join(levels) + "]>",
    )
    started = time.monotonic()
    with pytest.raises(ExtractionFatal, match="could not be read") as failed:
        page_text(path, tmp_path)
    assert time.monotonic() - started < 5
    assert "haha" not in failed.value.reason


# --- ZIP containers -------------------------------------------------------------------------


def test_a_zip_with_too_many_entries_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    path = crafted_docx(tmp_path / "many.docx", paragraph("x"))
    with zipfile.ZipFile(path, "a") as zf:
        parts = len(zf.infolist())
        for i in range(ZIP_MAX_ENTRIES):
            zf.writestr(f"junk/{i}", b"")
    assert zip_declared_entries(path) == ZIP_MAX_ENTRIES + parts
    reason = f"The ZIP container has more than {ZIP_MAX_ENTRIES} entries."
    assert zip_problem(path) == reason
    with pytest.raises(ExtractionFatal, match="more than 10000 entries"):
        page_text(path, tmp_path)
    assert sniff_path(path) is None and unsupported_reason(path) == reason


def test_a_zip_bomb_entry_is_refused(tmp_path: Path) -> None:
    path = crafted_docx(tmp_path / "bomb.docx", paragraph("x"))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("word/media/zeros.bin", bytes(8 * 1024 * 1024))  # ~8 KB compressed
    with pytest.raises(ExtractionFatal, match="inflates more than 500 times"):
        page_text(path, tmp_path)


def info(name: str, size: int, compressed: int) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name)
    entry.file_size, entry.compress_size = size, compressed
    return entry


def test_declared_sizes_are_bounded() -> None:
    mib = 1024 * 1024
    assert zip_sizes_problem([info("a.xml", 50_000, 5_000)]) is None
    assert zip_sizes_problem([info("a.xml", 900_000, 10)]) is None  # small: ratio not judged
    # A valid DOCX of one sentence repeated 30,000 times inflates ~176 times.
    assert zip_sizes_problem([info("word/document.xml", 1_591_548, 9_058)]) is None
    big = [info(f"p{i}", 100 * mib, 20 * mib) for i in range(3)]
    assert zip_sizes_problem(big) == "The ZIP container inflates to more than 256 MB."
    many_small = [info(f"p{i}", 600_000, 1_000) for i in range(10)]  # 6 MB at 600x
    assert zip_sizes_problem(many_small) == (
        "The ZIP container inflates more than 500 times (a ZIP bomb?)."
    )


def test_the_corpus_docx_pass_the_container_check(corpus: Path) -> None:
    for path in sorted((corpus / "office").glob("*.docx")):
        assert zip_problem(path) is None, path.name


# --- sniffing order -------------------------------------------------------------------------


def with_leading_entry(path: Path, source: Path, name: str, data: bytes) -> Path:
    """`source` with a stored (uncompressed) first entry: its bytes are in the first KiB."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        dst.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_STORED)
        for item in src.infolist():
            dst.writestr(item, src.read(item.filename))
    return path


def test_a_docx_with_pdf_magic_in_its_first_kib_is_a_docx(tmp_path: Path) -> None:
    base = docx_file(tmp_path / "base.docx")
    path = with_leading_entry(tmp_path / "tricky.docx", base, "a.txt", b"%PDF-1.7 not a pdf")
    assert b"%PDF-" in path.read_bytes()[:1024]
    assert sniff_path(path) == "docx"
    assert "Revenue grew" in page_text(path, tmp_path)


def test_another_office_package_with_pdf_magic_is_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("a.txt"), b"%PDF-1.7", compress_type=zipfile.ZIP_STORED)
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    assert sniff_path(path) == "xlsx"  # the container is judged first: an XLSX, not a PDF


def test_the_dead_supported_list_is_gone() -> None:
    assert not hasattr(sniff, "SUPPORTED")
