"""The new formats' extractors (XLSX, PPTX, ODT/ODS/ODP, EPUB, EML, RTF, Markdown, legacy
Office through a converter), their sniffing and their hostile inputs, on documents the tests
make; no bus, no child process."""

from __future__ import annotations

import stat
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import extract
from services.extractor.formats.containers import iso_date
from services.extractor.spec import ExtractionFatal, ExtractSpec
from shared.sniff import looks_like_email, looks_like_markdown, sniff_path, unsupported_reason
from tests.unit import office_fixtures as make
from tests.unit.extractor_fixtures import docx_file


def run(path: Path, tmp_path: Path, fmt: str | None = None, **kw: Any) -> list[dict[str, Any]]:
    fmt = fmt or sniff_path(path, path.name)
    assert fmt is not None, f"{path.name} is not sniffed"
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(tmp_path / "blobs"), **kw)
    return [dict(record) for record in extract(spec)]


def texts(records: list[dict[str, Any]]) -> list[str]:
    return [r["text"] for r in records if r["type"] == "page"]


def headings(records: list[dict[str, Any]]) -> list[list[tuple[int, str]]]:
    """Each page's headings as (level, text)."""
    return [
        [(h["level"], h["text"]) for h in r.get("headings", [])]
        for r in records
        if r["type"] == "page"
    ]


def meta(records: list[dict[str, Any]]) -> dict[str, Any]:
    assert records[0]["type"] == "meta"
    return records[0]


def test_xlsx_sheets_are_pages_with_tab_separated_rows_and_properties(tmp_path: Path) -> None:
    records = run(make.xlsx_file(tmp_path / "book.xlsx"), tmp_path)
    head = meta(records)
    assert (head["format"], head["pages_total"]) == ("xlsx", 2)
    assert texts(records) == [
        "Sales\n\nRegion\tRevenue\tQuarter\nNorth\t1200\tQ1\nSouth\t980.5\tQ1",
        "Staff\n\nName\tRole\nIngrid Larsen\tAccountant",
    ]
    assert headings(records) == [[(2, "Sales")], [(2, "Staff")]]
    metadata = head["metadata"]
    assert metadata["title"] == "Regional sales" and metadata["author"] == "Finance Team"
    assert metadata["subject"] == "Quarterly figures" and metadata["language"] == "en-GB"
    assert metadata["created"].startswith("2024-03-05T09:30:00")
    assert metadata["page_count"] == 2


def test_an_xlsx_stored_without_its_suffix_is_read(tmp_path: Path) -> None:
    blob = tmp_path / "3f9a"  # blobs are named by their digest
    blob.write_bytes(make.xlsx_file(tmp_path / "book.xlsx").read_bytes())
    assert "Ingrid Larsen" in texts(run(blob, tmp_path, "xlsx"))[1]


def test_a_million_empty_rows_end_quickly(tmp_path: Path) -> None:
    path = make.xlsx_million_empty_rows(tmp_path / "empty.xlsx")
    started = time.monotonic()
    records = run(path, tmp_path)
    assert time.monotonic() - started < 5
    assert texts(records) == ["Sheet1\n\nLedger\nOpening balance\t100"]


def test_the_cell_cap_is_a_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.extractor.formats import xlsx

    monkeypatch.setattr(xlsx, "MAX_CELLS", 4)
    with pytest.raises(ExtractionFatal, match="more than 4 cells"):
        run(make.xlsx_file(tmp_path / "book.xlsx"), tmp_path)


def test_pptx_slides_are_pages_with_notes_and_tables(tmp_path: Path) -> None:
    records = run(make.pptx_file(tmp_path / "deck.pptx"), tmp_path)
    head = meta(records)
    assert (head["format"], head["pages_total"]) == ("pptx", 2)
    first, second = texts(records)
    assert first == (
        "Launch plan\n\nShip the harbour release in May\n\n"
        "Notes:\nRemind everyone about the embargo"
    )
    assert second == "Budget\n\nItem\tCost\nLighthouse\t4500"
    assert headings(records) == [[(2, "Launch plan")], [(2, "Budget")]]
    assert head["metadata"]["title"] == "Harbour launch"
    assert head["metadata"]["author"] == "Product Office"


def test_odt_headings_lists_and_tables_in_order(tmp_path: Path) -> None:
    records = run(make.odt_file(tmp_path / "minutes.odt"), tmp_path)
    head = meta(records)
    assert (head["format"], head["pages_total"]) == ("odt", 1)
    assert texts(records) == [
        "Minutes of the harbour board\n\nThe board approved the new pier.\n\n"
        "- Repaint the crane\n\n- Order new buoys\n\nMember\tVote\nAnna\tYes"
    ]
    assert headings(records) == [[(1, "Minutes of the harbour board")]]
    assert head["metadata"] == {
        "title": "Meeting minutes",
        "author": "Odile Martin",
        "language": "fr-FR",
        "producer": head["metadata"]["producer"],
        "created": "2024-03-05T09:30:00",
    }
    assert head["metadata"]["producer"].startswith("ODFPY")


def test_ods_sheets_are_pages_and_repeated_empty_rows_cost_nothing(tmp_path: Path) -> None:
    records = run(make.ods_file(tmp_path / "stock.ods"), tmp_path)
    assert meta(records)["pages_total"] == 2
    assert texts(records) == [
        "Stock\n\nItem\tCount\nRope\t12\nAnchor\t3",
        "Suppliers\n\nName\tCity\nNordic Marine\tBergen",
    ]


def test_odp_slides_are_pages_with_notes(tmp_path: Path) -> None:
    records = run(make.odp_file(tmp_path / "tour.odp"), tmp_path)
    assert texts(records) == ["Welcome aboard\n\nNotes:\nSmile at the guests", "Safety rules"]
    assert headings(records) == [[(2, "Welcome aboard")], [(2, "Safety rules")]]
    assert meta(records)["metadata"]["title"] == "Harbour tour"


def test_epub_chapters_are_pages_in_spine_order(tmp_path: Path) -> None:
    records = run(make.epub_file(tmp_path / "keeper.epub"), tmp_path)
    head = meta(records)
    assert (head["format"], head["pages_total"]) == ("epub", 3)
    pages = texts(records)
    assert pages[0].startswith("Chapter 1") and "light the lamp" in pages[0]
    assert "storm rolled in" in pages[1] and "keeper finally slept" in pages[2]
    assert headings(records) == [[(1, f"Chapter {n}")] for n in (1, 2, 3)]
    assert head["metadata"]["title"] == "The Lighthouse Keeper"
    assert head["metadata"]["author"] == "Maren Holt"
    assert head["metadata"]["language"] == "en"


def test_eml_message_then_its_attachments_pages(tmp_path: Path) -> None:
    records = run(make.eml_file(tmp_path / "mail.eml", tmp_path), tmp_path)
    head = meta(records)
    assert (head["format"], head["pages_total"]) == ("eml", 5)
    pages = texts(records)
    assert pages[0].startswith("From: Clara Berg <clara@example.com>\nTo: accounts@example.org")
    assert "Subject: Invoice for March" in pages[0]
    assert "please find the invoice" in pages[0]
    assert pages[0].endswith("Attachments: invoice.pdf, orders.xlsx")
    assert pages[1].startswith("Attachment: invoice.pdf\n\n") and "Invoice 4471" in pages[1]
    assert pages[2] == "Payment terms 30 days"
    assert pages[3].startswith("Attachment: orders.xlsx\n\nSales") and "Ingrid" in pages[4]
    assert [r["page"] for r in records[1:]] == [1, 2, 3, 4, 5]
    assert headings(records) == [
        [],
        [(2, "Attachment: invoice.pdf")],
        [],
        [(2, "Attachment: orders.xlsx"), (2, "Sales")],
        [(2, "Staff")],
    ]
    assert head["metadata"]["title"] == "Invoice for March"
    assert head["metadata"]["author"] == "Clara Berg <clara@example.com>"
    assert head["metadata"]["created"] == "2024-03-05T09:30:00+00:00"


def test_an_html_only_email_is_read_through_the_html_extractor(tmp_path: Path) -> None:
    message = make.eml_message()
    message.set_content(
        "<html><body><nav>Menu</nav><p>The ferry leaves at noon today.</p></body></html>",
        subtype="html",
    )
    path = tmp_path / "html.eml"
    path.write_bytes(bytes(message))
    (page,) = texts(run(path, tmp_path))
    assert "The ferry leaves at noon today." in page and "<p>" not in page


def test_an_unsupported_attachment_is_a_page_with_a_reason(tmp_path: Path) -> None:
    message = make.eml_message()
    message.add_attachment(bytes(range(256)) * 4, maintype="application", subtype="octet-stream",
                           filename="blob.bin")  # fmt: skip
    path = tmp_path / "bin.eml"
    path.write_bytes(bytes(message))
    records = run(path, tmp_path)
    assert records[-1]["text"] == "Attachment: blob.bin"
    assert "not supported" in records[-1]["error"]


def test_eml_hostile_inputs_end_with_a_sentence(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFatal, match="more than 50 attachments"):
        run(make.eml_many_attachments(tmp_path / "many.eml"), tmp_path)
    with pytest.raises(ExtractionFatal, match="nested more than 3 deep"):
        run(make.nested_eml(tmp_path / "nested.eml"), tmp_path)


def test_attachments_are_counted_across_attached_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.extractor.formats import eml

    monkeypatch.setattr(eml, "MAX_ATTACHMENTS_TOTAL", 2)
    with pytest.raises(ExtractionFatal, match="more than 2 attachments, the limit for one doc"):
        run(make.nested_eml(tmp_path / "nested.eml", depth=3), tmp_path)


def test_an_attachments_pages_count_against_the_page_limit(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFatal, match="more pages than the limit of 3"):
        run(make.eml_file(tmp_path / "mail.eml", tmp_path), tmp_path, max_pages=3)


def test_rtf_text_and_info(tmp_path: Path) -> None:
    records = run(make.rtf_file(tmp_path / "tides.rtf"), tmp_path)
    assert texts(records) == ["High tide at 06:12 in the harbour.\nCafé opens after low tide."]
    assert meta(records)["metadata"] == {
        "title": "Tide tables",
        "author": "Jonas Weber",
        "created": "2024-03-05T09:30:00",
    }


def test_markdown_keeps_its_headings(tmp_path: Path) -> None:
    records = run(make.markdown_file(tmp_path / "notes.md"), tmp_path)
    assert meta(records)["format"] == "md"
    assert texts(records) == [make.MARKDOWN.strip()]
    assert meta(records)["metadata"] == {"title": "Release notes"}


def test_markdown_needs_a_name_or_a_clear_look() -> None:
    assert looks_like_markdown("# Notes\nplain words", "notes.md")
    assert not looks_like_markdown("# a comment in a config file\nkey = value", "settings.txt")
    assert looks_like_markdown(make.MARKDOWN, None)
    assert not looks_like_markdown("Just words.\n\nMore words.", "readme.md")


def test_email_is_told_by_its_headers() -> None:
    assert looks_like_email("From: a@b.c\nSubject: hi\n\nbody")
    assert looks_like_email("From someone Mon Jan 1\nFrom: a@b.c\nDate: x\n\nbody")
    assert not looks_like_email("Subject: hi\nTo: a@b.c\n\nno sender")
    assert not looks_like_email("From: a@b.c\nSubject: never ends")
    assert not looks_like_email("Dear team,\nFrom: the board\n\nhello")


def test_every_new_format_is_sniffed_from_its_bytes(tmp_path: Path) -> None:
    made = {
        "xlsx": make.xlsx_file(tmp_path / "a"),
        "pptx": make.pptx_file(tmp_path / "b"),
        "odt": make.odt_file(tmp_path / "c"),
        "ods": make.ods_file(tmp_path / "d"),
        "odp": make.odp_file(tmp_path / "e"),
        "epub": make.epub_file(tmp_path / "f"),
        "eml": make.eml_file(tmp_path / "g", tmp_path),
        "rtf": make.rtf_file(tmp_path / "h"),
        "docx": docx_file(tmp_path / "i"),
    }
    assert {fmt: sniff_path(path) for fmt, path in made.items()} == {f: f for f in made}
    assert sniff_path(make.markdown_file(tmp_path / "j")) == "md"  # a clear look, no name


def test_zip_bombs_and_nested_archives_are_refused_with_a_sentence(tmp_path: Path) -> None:
    xlsx_bomb = make.zip_bomb_xlsx(tmp_path / "bomb.xlsx")
    assert sniff_path(xlsx_bomb) is None
    assert "ZIP container" in unsupported_reason(xlsx_bomb)
    with pytest.raises(ExtractionFatal, match="ZIP container"):
        run(xlsx_bomb, tmp_path, "xlsx")
    docx_bomb = make.zip_bomb_docx(tmp_path / "bomb.docx")
    assert sniff_path(docx_bomb) is None
    assert "a ZIP bomb" in unsupported_reason(docx_bomb)
    nested = make.nested_archive(tmp_path / "nested.xlsx")
    assert sniff_path(nested) is None
    assert "not a readable Office, OpenDocument or EPUB" in unsupported_reason(nested)
    for fmt in ("xlsx", "pptx", "odt", "epub"):
        with pytest.raises(ExtractionFatal):
            run(nested, tmp_path, fmt)


def test_entities_in_opendocument_xml_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "xxe.odt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        zf.writestr(
            "content.xml",
            '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
        )
    assert sniff_path(path) == "odt"
    with pytest.raises(ExtractionFatal, match="entities"):
        run(path, tmp_path)


def test_legacy_office_is_415_without_libreoffice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPIPE_SOFFICE", "soffice-that-is-not-installed")
    path = legacy_doc(tmp_path / "old.doc")
    assert sniff_path(path) is None
    reason = unsupported_reason(path)
    assert "legacy Word (.doc)" in reason and "LibreOffice (soffice)" in reason
    assert "not installed" in reason


def test_legacy_office_is_converted_when_a_converter_is_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in soffice (a script that 'converts' by copying a DOCX) shows the plumbing:
    the call, the output it reads, and the format it reports."""
    converted = docx_file(tmp_path / "converted.docx")
    fake = tmp_path / "bin" / "soffice"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'while [ "$1" != "--outdir" ]; do shift; done\n'
        f'cp {converted} "$2/document.docx"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("DOCPIPE_SOFFICE", str(fake))
    path = legacy_doc(tmp_path / "old.doc")
    assert sniff_path(path) == "doc"
    records = run(path, tmp_path)
    assert meta(records)["format"] == "doc"
    assert "Revenue grew" in texts(records)[0]


def legacy_doc(path: Path) -> Path:
    """An OLE2 compound file holding a WordDocument stream (what makes a .doc a .doc)."""
    return write_ole(path, "WordDocument")


def write_ole(path: Path, stream: str) -> Path:
    """A minimal OLE2 compound file whose root holds one stream named `stream`."""
    sector = 512
    header = bytearray(sector)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    header[0x18:0x1A] = (0x3E).to_bytes(2, "little")  # minor version
    header[0x1A:0x1C] = (3).to_bytes(2, "little")  # major version 3: 512-byte sectors
    header[0x1C:0x1E] = b"\xfe\xff"  # little-endian
    header[0x1E:0x20] = (9).to_bytes(2, "little")  # sector shift
    header[0x20:0x22] = (6).to_bytes(2, "little")  # mini sector shift
    header[0x2C:0x30] = (1).to_bytes(4, "little")  # one FAT sector
    header[0x30:0x34] = (1).to_bytes(4, "little")  # directory starts at sector 1
    header[0x38:0x3C] = (4096).to_bytes(4, "little")  # mini stream cutoff
    header[0x3C:0x40] = (0xFFFFFFFE).to_bytes(4, "little")  # no mini FAT
    header[0x44:0x48] = (0xFFFFFFFE).to_bytes(4, "little")  # no DIFAT sectors
    difat = [0] + [0xFFFFFFFF] * 108  # the FAT is sector 0
    header[0x4C:0x200] = b"".join(v.to_bytes(4, "little") for v in difat)
    # Sector 0 the FAT, 1 the directory, 2..9 the stream (a chain), the rest free.
    fat = [0xFFFFFFFD, 0xFFFFFFFE, *range(3, 10), 0xFFFFFFFE] + [0xFFFFFFFF] * 118
    fat_sector = b"".join(v.to_bytes(4, "little") for v in fat)

    def entry(name: str, kind: int, child: int, start: int, size: int) -> bytes:
        raw = bytearray(128)
        encoded = (name + "\x00").encode("utf-16-le")
        raw[0 : len(encoded)] = encoded
        raw[0x40:0x42] = len(encoded).to_bytes(2, "little")
        raw[0x42] = kind
        raw[0x43] = 1  # black
        raw[0x44:0x48] = (0xFFFFFFFF).to_bytes(4, "little")
        raw[0x48:0x4C] = (0xFFFFFFFF).to_bytes(4, "little")
        raw[0x4C:0x50] = child.to_bytes(4, "little")
        raw[0x74:0x78] = start.to_bytes(4, "little")
        raw[0x78:0x7C] = size.to_bytes(4, "little")
        return bytes(raw)

    directory = (
        entry("Root Entry", 5, 1, 0xFFFFFFFE, 0)
        + entry(stream, 2, 0xFFFFFFFF, 2, 4096)  # a 4096-byte stream: a regular stream
        + bytes(128 * 2)
    )
    path.write_bytes(bytes(header) + fat_sector + directory + bytes(4096))
    return path


def test_dates_become_iso_8601() -> None:
    assert iso_date("D:20240305093000+01'00'") == "2024-03-05T09:30:00+01:00"
    assert iso_date("2024-03-05T09:30:00Z") == "2024-03-05T09:30:00+00:00"
    assert iso_date("Tue, 05 Mar 2024 09:30:00 +0000") == "2024-03-05T09:30:00+00:00"
    assert iso_date("sometime in spring") == "sometime in spring"
    assert iso_date("") is None


@pytest.mark.parametrize(
    ("fmt", "maker", "what"),
    [
        ("xlsx", make.xlsx_file, "spreadsheet"),
        ("pptx", make.pptx_file, "presentation"),
        ("odt", make.odt_file, "text document"),
        ("epub", make.epub_file, "e-book"),
    ],
)
def test_a_damaged_container_is_a_sentence(tmp_path: Path, fmt: str, maker: Any, what: str) -> None:
    whole = maker(tmp_path / f"whole.{fmt}").read_bytes()
    cut = tmp_path / f"cut.{fmt}"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ExtractionFatal, match=f"The {what} is damaged"):
        run(cut, tmp_path, fmt)


def test_a_workbook_without_its_parts_is_a_sentence(tmp_path: Path) -> None:
    path = tmp_path / "hollow.xlsx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("xl/workbook.xml", "<workbook/>")
    assert sniff_path(path) == "xlsx"
    with pytest.raises(ExtractionFatal, match="The spreadsheet is damaged and could not be read"):
        run(path, tmp_path)


def test_docx_and_html_give_their_metadata_too(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_paragraph("The harbour master's report.")
    document.core_properties.title = "Harbour report"
    document.core_properties.author = "Harbour Master"
    document.core_properties.language = "nb-NO"
    document.save(str(tmp_path / "report.docx"))
    document.add_heading("Arrivals", level=2)
    document.save(str(tmp_path / "report.docx"))
    records = run(tmp_path / "report.docx", tmp_path)
    assert headings(records) == [[(2, "Arrivals")]]
    metadata = meta(records)["metadata"]
    assert (metadata["title"], metadata["author"]) == ("Harbour report", "Harbour Master")
    assert metadata["language"] == "nb-NO"

    page = tmp_path / "page.html"
    page.write_text(
        '<!DOCTYPE html><html lang="de"><head><title>Hafenordnung</title>'
        '<meta name="author" content="Hafenamt"><meta name="generator" content="Hugo">'
        "</head><body><h1>Hafenordnung</h1>"
        "<p>Anlegen nur mit Erlaubnis des Hafenmeisters.</p></body></html>"
    )
    html_records = run(page, tmp_path)
    assert headings(html_records) == [[(1, "Hafenordnung")]]
    assert meta(html_records)["metadata"] == {
        "title": "Hafenordnung",
        "author": "Hafenamt",
        "language": "de",
        "producer": "Hugo",
    }
