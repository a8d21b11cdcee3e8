"""pypdf's undecodable glyph names ("/g18/g152...") are never taken for text, and the careful
engine is not run again on later pages drawn with the same undecodable fonts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pypdf import PageObject

from services.extractor.formats import extract
from services.extractor.formats.pdf_checks import GLYPH_NAMES_SHARE, glyph_name_share
from services.extractor.spec import ExtractSpec
from tests.conftest import corpus_dir, unavailable

TAM_REVIEW = "pdfjs-TAMReview.pdf"  # a CID font pypdf can only name: "/g18/g152/g135..."


def test_glyph_name_share() -> None:
    assert glyph_name_share("/g18/g152/g135/g3/g145") == 1.0
    assert glyph_name_share("/uni00A0/uni2019 x") > GLYPH_NAMES_SHARE
    assert glyph_name_share("/cid12/cid7/cid99") == 1.0
    assert glyph_name_share("") == 0.0
    # Ordinary text with slashes is not mistaken for glyph names.
    assert glyph_name_share("See /usr/bin and /etc/hosts, or a 1/2 cup.") == 0.0
    assert glyph_name_share("Total: 12/2024 and A/B testing") == 0.0


def _pages(path: Path, tmp_path: Path) -> list[dict[str, Any]]:
    spec = ExtractSpec(path=str(path), format="pdf", blob_dir=str(tmp_path / "blobs"), ocr="never")
    return [r for r in extract(spec) if r["type"] == "page"]


@pytest.fixture
def tam_review() -> Path:
    path = corpus_dir() / "pdf_text" / TAM_REVIEW
    if not path.exists():
        unavailable(f"corpus file {TAM_REVIEW} is missing")
    return path


def test_glyph_names_are_not_text(tam_review: Path, tmp_path: Path) -> None:
    pages = _pages(tam_review, tmp_path)
    assert len(pages) == 23
    assert not any(glyph_name_share(p["text"]) > GLYPH_NAMES_SHARE for p in pages)
    # pdfium's reading is kept instead: words, if run together.
    assert "Technology" in pages[1]["text"]


def test_careful_engine_skipped_for_known_undecodable_fonts(
    tam_review: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = PageObject.extract_text

    def counting(self: PageObject, *args: Any, **kwargs: Any) -> str:
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(PageObject, "extract_text", counting)
    pages = _pages(tam_review, tmp_path)
    with_memo = len(calls)
    # Without the memo every suspicious page of this document goes to pypdf (12 of 23).
    assert 0 < with_memo < 6, with_memo
    assert len(pages) == 23
