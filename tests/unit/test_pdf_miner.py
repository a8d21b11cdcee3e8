"""The third PDF engine: when a page's pypdf text still looks wrong (pdf_checks.careful_suspicion),
and what pdfminer's reading replaces (pdf_miner). The corpus files that need it (VFont, a page
pypdf breaks into letters) are in test_extract_corpus.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

from services.extractor.formats.pdf_checks import careful_suspicion, stray_letters, suspicion
from services.extractor.formats.pdf_miner import (
    MINER_CPU_BUDGET_SECONDS,
    MinerPages,
    choose_miner_text,
    miner_may_read,
    third_reading,
)
from tests.fixtures import pdf_with_pages, text_image

PROSE = (
    "The South Carolina Department of Insurance will hold a public hearing in accordance "
    "with the requirements of the section, to discuss the status of the coastal market."
)
# What pypdf made of a page of PDFBOX-3127-VFont and of PDFBOX-3042 (corpus).
BROKEN = (
    "The Sout h Caroli na Depart ment of I nsurance will hol d a publi c heari ng i n "
    "accordance with t he require ments of Secti on 38, fro m 5 p. m. The Conf erence Cent er"
)
BROKEN_ONCE_OR_TWICE = PROSE + " nor did he state that he was currentl y t aking medications, s"
NO_FONTS: frozenset[tuple[int, int]] = frozenset()
CZECH = "Toto je pokusný text s češtinou, který přijel k nám z Brna do hlavního města. " * 3


def test_stray_letters_count_only_letters_that_are_no_word() -> None:
    assert stray_letters(BROKEN) >= 5
    assert stray_letters("he was currentl y t aking medications") == 1  # y is a word in Spanish
    assert stray_letters(PROSE) == 0
    # One-letter words of Czech, Polish, Spanish; initials, list letters after digits.
    assert stray_letters(CZECH) == 0
    assert stray_letters("Plan B and U S C and item 3 b and Fig. c shows") == 0


def test_careful_suspicion() -> None:
    assert careful_suspicion(PROSE) is None
    assert careful_suspicion(CZECH) is None
    assert careful_suspicion(BROKEN) == "words broken apart"
    # Two letters standing alone in 40 words are a broken reading, as on PDFBOX-3042.
    assert careful_suspicion(PROSE + " currentl y t aking x" + " ok" * 5) == "words broken apart"
    assert careful_suspicion("N O T I C E  O F  P U B L I C  H E A R I N G " * 3) == (
        "letter-spaced words"
    )
    assert careful_suspicion("12") == "little or no text"
    # Right-to-left script is pdfium's problem only: pypdf's Hebrew is not suspect for it.
    hebrew = "שלום עולם זהו טקסט בעברית שנכתב מימין לשמאל " * 3
    assert suspicion(hebrew) == "right-to-left or vertical script"
    assert careful_suspicion(hebrew) is None


def test_choose_miner_text() -> None:
    assert choose_miner_text(PROSE, BROKEN) == PROSE
    # pdfminer's reading must look right itself...
    spaced = "T h e  S o u t h  C a r o l i n a  D e p a r t m e n t " * 3
    assert choose_miner_text(spaced, BROKEN) == BROKEN
    # ...and hold about as many letters and digits as the text it replaces.
    assert choose_miner_text(PROSE[:60], BROKEN) == BROKEN


@pytest.fixture
def three_pages(tmp_path: Path) -> Path:
    scan = text_image(["A scanned page"])
    return pdf_with_pages(tmp_path / "three.pdf", ["first page words", PROSE, scan])


def test_miner_reads_pages_in_any_order(three_pages: Path) -> None:
    miner = MinerPages(str(three_pages), None)
    try:
        assert "coastal market" in miner.text(1)
        assert "first page words" in miner.text(0)
        assert miner.text(2).strip() == ""
        assert miner.cpu_seconds > 0
    finally:
        miner.close()


def test_third_reading_replaces_a_broken_reading(three_pages: Path) -> None:
    reader = PdfReader(str(three_pages))
    miner = MinerPages(str(three_pages), None)
    try:
        text = third_reading(reader.pages[1], 1, miner, BROKEN, NO_FONTS)
        assert "South Carolina Department" in text and "Sout h" not in text
        # A page that draws with no font has nothing for pdfminer to find: it is not asked.
        blank = PdfWriter().add_blank_page(595, 842)
        assert not miner_may_read(blank, miner)
        assert third_reading(blank, 2, miner, "", NO_FONTS) == ""
        # Once the document's pdfminer budget is spent, the other engines' text stays.
        miner.cpu_seconds = MINER_CPU_BUDGET_SECONDS
        assert third_reading(reader.pages[1], 1, miner, BROKEN, NO_FONTS) == BROKEN
    finally:
        miner.close()


def test_fonts_pdfminer_did_not_help_with_are_not_read_again(three_pages: Path) -> None:
    reader = PdfReader(str(three_pages))
    miner = MinerPages(str(three_pages), None)
    fonts = frozenset({(5, 0)})
    try:
        # pdfminer's reading of page 1 has fewer letters than this: it is not kept...
        longer = PROSE + " " + PROSE
        assert third_reading(reader.pages[1], 1, miner, longer, fonts) == longer
        assert miner.unhelpful_fonts == {(5, 0)}
        spent = miner.cpu_seconds
        # ...so a later page drawn with the same fonts is not given to pdfminer at all.
        assert third_reading(reader.pages[0], 0, miner, BROKEN, fonts) == BROKEN
        assert miner.cpu_seconds == spent
        # Pages whose fonts are not known are never skipped for it.
        assert "South Carolina" in third_reading(reader.pages[1], 1, miner, BROKEN, NO_FONTS)
    finally:
        miner.close()
