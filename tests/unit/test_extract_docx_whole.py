"""DOCX read whole (headers and footers once per section, footnotes and endnotes, comments on
request, text boxes, content controls, nested tables) and paged at its page and section breaks;
flowing text (TXT, HTML, Markdown) paged at the configured size. Documents are built here."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import docx
import pytest
from docx.enum.text import WD_BREAK

from services.extractor.formats import extract
from services.extractor.service import build_spec
from services.extractor.spec import ExtractSpec
from services.ingest.dedup import dedup_key
from services.ingest.models import JobOptions
from shared.events import DocumentUploaded
from shared.settings import Settings
from tests.unit.docx_fixtures import (
    add_notes_part,
    append_body,
    paged_docx,
    para,
    text_box,
    whole_docx,
)

BODY = (
    "Harbour report\n\nTides are rising today.\n\nInside a block control.\n\n"
    "Anchor paragraph.\n\nBoxed note\n\n"
    "Outer | (Inner A | Inner B; Inner C | Inner D)\nLeft | Right\n\n"
    "Ouch[1] and later[i]\n\nCheck the buoy count."
)


def records(path: Path, fmt: str = "docx", **kw: Any) -> list[dict[str, Any]]:
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(path.parent / "blobs"), **kw)
    return [dict(r) for r in extract(spec)]


def page_texts(recs: list[dict[str, Any]]) -> list[str]:
    pages = [r for r in recs if r["type"] == "page"]
    assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
    assert recs[0]["pages_total"] == len(pages)
    return [p["text"] for p in pages]


def test_every_hidden_part_in_document_order(tmp_path: Path) -> None:
    recs = records(whole_docx(tmp_path / "whole.docx"))
    # One page: w:lastRenderedPageBreak (inside "Ouch ... later") is not a page break; the
    # text box stored twice (DrawingML and its VML fallback) is read once; the footnote and
    # the endnote follow the text; the comment is left out (not asked for).
    assert page_texts(recs) == [BODY + "\n\n[1] A tachyon walks into a bar.\n\n[i] Fin."]
    assert recs[1]["headings"] == [{"level": 1, "text": "Harbour report"}]


def test_comments_only_when_asked(tmp_path: Path) -> None:
    path = whole_docx(tmp_path / "whole.docx")
    assert "Count again" not in "".join(page_texts(records(path)))
    (text,) = page_texts(records(path, docx_comments=True))
    assert text == (
        BODY + "\n\n[1] A tachyon walks into a bar.\n\n"
        "Comment (Ingrid Larsen): Count again\n\n[i] Fin."
    )


def test_pages_at_page_and_section_breaks_headers_once_per_section(tmp_path: Path) -> None:
    assert page_texts(records(paged_docx(tmp_path / "paged.docx"))) == [
        # The first section's header opens it; the page break inside a paragraph cuts it.
        "Acme header\n\nPage one text.\n\nBefore the break.",
        # The section ends here: its footer closes its last page.
        "After the break.\n\nAcme footer",
        # Section 2 starts a new page and shares section 1's header and footer (not repeated);
        # section 3 is continuous (same page) and has a header of its own.
        "Section two text.\n\nAnnex header\n\nSection three, same page.",
        # A paragraph with pageBreakBefore starts a page.
        "Own page.",
    ]


def test_a_page_between_breaks_is_still_cut_by_size(tmp_path: Path) -> None:
    document = docx.Document()
    sentence = "The harbour master counts the boats in the morning. "
    for _ in range(3):
        document.add_paragraph(sentence * 10)  # ~520 characters
    document.add_paragraph("Last words before the break.").runs[0].add_break(WD_BREAK.PAGE)
    document.add_paragraph("After the break.")
    path = tmp_path / "long.docx"
    document.save(str(path))
    pages = page_texts(records(path, flowing_page_chars=1000))
    assert all(0 < len(page) <= 1000 for page in pages)
    assert pages[-1] == "After the break."  # the explicit break still starts a page
    assert pages[-2].endswith("Last words before the break.")
    assert len(pages) == 4  # one ~520-character paragraph per page, cut between paragraphs
    assert page_texts(records(path))[0].count(sentence.strip()) == 30  # default: one page


def test_footnotes_go_with_the_page_that_references_them(tmp_path: Path) -> None:
    document = docx.Document()
    document.add_paragraph("First page.").runs[0].add_break(WD_BREAK.PAGE)
    append_body(
        document, "<w:p>" + para("Noted") + "<w:r><w:footnoteReference w:id='7'/></w:r></w:p>"
    )
    add_notes_part(document, "footnote", {7: "Only on page two."})
    path = tmp_path / "notes.docx"
    document.save(str(path))
    assert page_texts(records(path)) == ["First page.", "Noted[1]\n\n[1] Only on page two."]


def test_a_vml_text_box_and_a_content_control_around_a_table(tmp_path: Path) -> None:
    document = docx.Document()
    vml = (
        "<w:r><w:pict><v:shape><v:textbox><w:txbxContent><w:p>"
        + para("Old style box")
        + "</w:p></w:txbxContent></v:textbox></v:shape></w:pict></w:r>"
    )
    append_body(document, "<w:p>" + para("Before") + vml + "</w:p>")
    append_body(
        document,
        "<w:sdt><w:sdtContent><w:tbl><w:tr><w:tc><w:p>"
        + para("Cell one")
        + "</w:p></w:tc><w:sdt><w:sdtContent><w:tc><w:p>"
        + para("Cell in a control")
        + "</w:p></w:tc></w:sdtContent></w:sdt></w:tr></w:tbl></w:sdtContent></w:sdt>",
    )
    append_body(document, "<w:p>" + para("After") + text_box("New style box") + "</w:p>")
    path = tmp_path / "boxes.docx"
    document.save(str(path))
    assert page_texts(records(path)) == [
        "Before\n\nOld style box\n\nCell one | Cell in a control\n\nAfter\n\nNew style box"
    ]


def test_deleted_and_moved_away_text_and_field_codes_are_not_text(tmp_path: Path) -> None:
    document = docx.Document()
    append_body(
        document,
        "<w:p>"
        + para("Kept")
        + "<w:del><w:r><w:delText> deleted</w:delText></w:r></w:del>"
        + "<w:moveFrom><w:r><w:t> moved away</w:t></w:r></w:moveFrom>"
        + "<w:r><w:fldChar w:fldCharType='begin'/></w:r>"
        + "<w:r><w:instrText> PAGE </w:instrText></w:r>"
        + "<w:r><w:fldChar w:fldCharType='separate'/></w:r>"
        + para(" 3")
        + "<w:r><w:fldChar w:fldCharType='end'/></w:r></w:p>",
    )
    path = tmp_path / "tracked.docx"
    document.save(str(path))
    assert page_texts(records(path)) == ["Kept 3"]


def test_an_entity_in_the_footnotes_part_is_not_expanded(tmp_path: Path) -> None:
    document = docx.Document()
    append_body(
        document, "<w:p>" + para("Body") + "<w:r><w:footnoteReference w:id='1'/></w:r></w:p>"
    )
    prolog = '<!DOCTYPE w:footnotes [<!ENTITY x "EXPANDED">]>'
    add_notes_part(document, "footnote", {1: "before &x; after"}, prolog=prolog)
    path = tmp_path / "entity.docx"
    document.save(str(path))
    (text,) = page_texts(records(path))
    assert text == "Body[1]\n\n[1] before  after"


@pytest.mark.parametrize("fmt", ["txt", "md", "html"])
def test_flowing_text_is_paged_at_the_configured_size(tmp_path: Path, fmt: str) -> None:
    paragraphs = [f"Paragraph {i} tells of tides, moorings and the cargo." for i in range(120)]
    body = "\n\n".join(paragraphs)
    if fmt == "html":
        html = "".join(f"<p>{p}</p>" for p in paragraphs)
        body = f"<html><head><title>T</title></head><body><article>{html}</article></body></html>"
    path = tmp_path / f"long.{fmt}"
    path.write_text(body)
    pages = page_texts(records(path, fmt, flowing_page_chars=1000))
    assert len(pages) >= 6 and all(0 < len(page) <= 1000 for page in pages)
    joined = " ".join(pages)
    assert all(p in joined for p in paragraphs)
    assert len(page_texts(records(path, fmt))) == 1  # 6,500 characters: one default page


def test_the_page_size_and_comments_travel_to_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCPIPE_FLOWING_PAGE_CHARS", "2000")
    settings = Settings()
    event = DocumentUploaded(
        job_id="00000000-0000-0000-0000-000000000001",
        document_uri="blob://sha256/" + "a" * 64,
        docx_comments=True,
    )
    spec = build_spec(tmp_path / "d.docx", "docx", event, settings)
    assert (spec.flowing_page_chars, spec.docx_comments) == (2000, True)
    assert ExtractSpec.from_json(spec.to_json()) == spec
    assert Settings.model_fields["flowing_page_chars"].default == ExtractSpec.flowing_page_chars
    monkeypatch.setenv("DOCPIPE_FLOWING_PAGE_CHARS", "10")
    with pytest.raises(ValueError, match="flowing_page_chars"):
        Settings()


def test_comments_are_part_of_the_duplicate_key_and_old_keys_are_kept() -> None:
    sha = "ab" * 32
    # The key a submission without the option had before docx_comments existed.
    before = json.dumps(
        {"sha256": sha, "options": {"ocr": "auto", "password": False}}, sort_keys=True
    )
    assert dedup_key(sha, JobOptions()) == hashlib.sha256(before.encode()).hexdigest()
    assert dedup_key(sha, JobOptions(docx_comments=True)) not in (
        dedup_key(sha, JobOptions()),
        None,
    )
