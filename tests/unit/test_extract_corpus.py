"""The extractor on the shared corpus of real third-party documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import TEXT_PAGE_MAX_CHARS
from services.extractor.service import CHILD_ARGV, detect_format
from services.extractor.spec import ExtractSpec
from shared.errors import PermanentError
from shared.sandbox import run_sandboxed
from tests.conftest import corpus_dir
from tests.quality import word_recall

pytestmark = pytest.mark.corpus

RECALL_FLOOR = 0.95
# The pipeline's recall may fall this far below the best bare engine's on a file.
RECALL_SLACK = 0.01


def _names(folder: str, pattern: str) -> list[str]:
    path = corpus_dir() / folder
    return sorted(p.name for p in path.glob(pattern)) if path.is_dir() else []


async def extract_through_child(path: Path, tmp_path: Path, **kw: Any) -> list[dict[str, Any]]:
    """What the service would see: a PermanentError reason as a fatal record, else the lines."""
    try:
        fmt = detect_format(path)
    except PermanentError as exc:
        return [{"type": "fatal", "reason": exc.reason}]
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(tmp_path / "blobs"), **kw)
    lines: list[dict[str, Any]] = []

    async def on_line(line: bytes) -> None:
        lines.append(json.loads(line))

    result = await run_sandboxed(
        CHILD_ARGV,
        job_id=None,
        timeout=120,
        cpu_seconds=120,
        memory_mb=1536,
        stdin=spec.to_json(),
        on_line=on_line,
    )
    if result.failure:
        lines.append({"type": "fatal", "reason": result.failure})
    return lines


def bare_engine_texts(path: Path) -> dict[str, str]:
    """The whole text of the file as each engine reads it alone, with its defaults."""
    import pypdfium2 as pdfium
    from pdfminer.high_level import extract_text
    from pypdf import PdfReader

    doc = pdfium.PdfDocument(str(path))
    try:
        fast = "\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    finally:
        doc.close()
    return {
        "pypdf": "\n".join(p.extract_text() or "" for p in PdfReader(str(path)).pages),
        "pdfium": fast,
        "pdfminer": extract_text(str(path)),
    }


@pytest.mark.parametrize("name", _names("pdf_text", "*.expected.txt"))
async def test_text_pdf_word_recall(corpus: Path, tmp_path: Path, name: str) -> None:
    """On every text PDF with a reference: at least RECALL_FLOOR, and within RECALL_SLACK of
    the best of pypdf, pdfium and pdfminer read alone."""
    stem = name.removesuffix(".expected.txt")
    expected = (corpus / "pdf_text" / name).read_text(encoding="utf-8", errors="replace")
    path = corpus / "pdf_text" / f"{stem}.pdf"
    lines = await extract_through_child(path, tmp_path, ocr="never")
    text = "\n".join(r["text"] for r in lines if r["type"] == "page")
    recall = word_recall(expected, text)
    engines = {k: word_recall(expected, v) for k, v in bare_engine_texts(path).items()}
    print(
        f"word recall {stem}: {recall:.3f}; "
        + ", ".join(f"{k} {v:.3f}" for k, v in engines.items())
    )
    assert recall >= RECALL_FLOOR, f"{stem}: recall {recall:.3f}"
    best = max(engines, key=lambda k: engines[k])
    assert recall >= engines[best] - RECALL_SLACK, (
        f"{stem}: {recall:.3f}, {best} {engines[best]:.3f}"
    )


@pytest.mark.parametrize("name", _names("bad", "*"))
async def test_bad_file_ends_in_pages_or_a_reason(corpus: Path, tmp_path: Path, name: str) -> None:
    lines = await extract_through_child(corpus / "bad" / name, tmp_path)
    assert lines, "no output at all"
    fatal = [r for r in lines if r["type"] == "fatal"]
    if fatal:
        reason = fatal[0]["reason"]
        print(f"{name}: fatal: {reason}")
        assert reason[0].isupper() and reason.endswith("."), reason
        assert "Traceback" not in reason and len(reason) < 300
        assert lines[-1]["type"] == "fatal"
    else:
        meta, *pages = lines
        assert meta["type"] == "meta" and meta["pages_total"] == len(pages) >= 1
        assert [p["page"] for p in pages] == list(range(1, len(pages) + 1))
        print(f"{name}: {len(pages)} pages")


async def test_encrypted_corpus_pdfs_open_with_their_passwords(
    corpus: Path, tmp_path: Path
) -> None:
    for name, password, word in (
        ("pypdf-r4-aes-user-password.pdf", "asdfzxcv", "encryption"),
        ("samples-libreoffice-writer-password.pdf", "openpassword", "Lorem"),
    ):
        path = corpus / "bad" / name
        lines = await extract_through_child(path, tmp_path, password=password)
        assert word in lines[1]["text"], name
        lines = await extract_through_child(path, tmp_path, password="wrong")
        assert lines == [{"type": "fatal", "reason": "The password given for this PDF is wrong."}]


async def test_docx_external_entity_is_not_resolved(corpus: Path, tmp_path: Path) -> None:
    lines = await extract_through_child(corpus / "bad" / "poi-ExternalEntityInText.docx", tmp_path)
    text = lines[1]["text"]
    assert text.startswith("Here should not be the POI web site")
    assert "poi.apache.org" not in text and "Apache" not in text


async def test_office_corpus(corpus: Path, tmp_path: Path) -> None:
    office = corpus / "office"
    wiki = await extract_through_child(office / "html-readability-wikipedia.html", tmp_path)
    expected_html = (office / "html-readability-wikipedia.expected.html").read_bytes()
    from services.extractor.formats.html import visible_text

    recall = word_recall(visible_text(expected_html), wiki[1]["text"])
    print(f"wikipedia main-text recall vs readability: {recall:.3f}")
    assert recall >= 0.8
    titanic = await extract_through_child(office / "csv-seaborn-titanic.csv", tmp_path)
    first_row = titanic[1]["text"].split("\n")[1]
    assert first_row.startswith("survived: 0; pclass: 3; sex: male; age: 22.0")
    alice = await extract_through_child(office / "txt-snappy-alice29.txt", tmp_path)
    # The book (~150,000 characters) is cut into pages of at most TEXT_PAGE_MAX_CHARS,
    # between paragraphs: every page is within the bound and none is lost.
    pages = [r for r in alice if r["type"] == "page"]
    assert alice[0]["pages_total"] == len(pages) >= 3
    assert all(0 < len(p["text"]) <= TEXT_PAGE_MAX_CHARS for p in pages)
    assert "Alice" in pages[0]["text"] and sum(len(p["text"]) for p in pages) > 100_000
    tables = await extract_through_child(office / "docx-mammoth-tables.docx", tmp_path)
    assert " | " in tables[1]["text"]


async def test_embedded_images_sent_to_ocr_are_those_with_text(
    corpus: Path, tmp_path: Path
) -> None:
    """With the default options, through the sandboxed child: TAMReview's four diagrams go to
    OCR; pdkids' paintings and portraits (where OCR finds no word) do not."""
    for stem, expected in (("pdfjs-TAMReview", 4), ("pdfjs-pdkids", 0)):
        lines = await extract_through_child(corpus / "pdf_text" / f"{stem}.pdf", tmp_path)
        assert not [r for r in lines if r["type"] == "fatal"], stem
        images = [i for r in lines if r["type"] == "page" for i in r["images"]]
        assert len(images) == expected, (stem, images)
        assert all(i["kind"] == "embedded" for i in images)
