"""A job's OCR languages (issue 14, item 5): the strict syntax, the installed-language check at
submit, the duplicate key, and what the OCR engine makes of a German scan and of rotated pages,
with each reading's confidence. The engine runs in-process here (its sandboxed children are
tests/unit/test_ocr_tesseract.py's and the stack's business)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.ingest.dedup import dedup_key
from services.ingest.errors import OcrLanguageNotInstalled
from services.ingest.models import JobOptions, UploadOptions
from services.ingest.ocr_lang import checked_ocr_lang, installed
from services.ocr.engine import DEFAULT_PSM, Engine, Recognised, needs_orientation_check
from services.ocr.handler import PageOcr
from services.ocr.tesseract import OcrResult
from shared.events import DocumentUploaded, ImagesExtracted
from shared.ocr_languages import installed_languages, not_installed_sentence
from shared.settings import Settings
from tests.fixtures import text_image
from tests.quality import cer

GERMAN = [
    "Größere Übungen für schöne Mädchen",
    "Die Bären äßen gern süße Äpfel",
    "Straßenüberführung über den Fluß",
]
ENGLISH = ["The quick brown fox jumps", "over the lazy dog near", "the river bank today."]
UMLAUTS = set("äöüÄÖÜß")
EUROPEAN = {"eng", "deu", "fra", "spa", "ita", "por", "nld"}


def umlaut_recall(expected: str, got: str) -> float:
    """The share of the expected text's umlauts and eszetts that the reading has, by count."""
    want = [c for c in expected if c in UMLAUTS]
    have = list(got)
    found = 0
    for char in want:
        if char in have:
            have.remove(char)
            found += 1
    return found / len(want)


# --- syntax -------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["deu", "deu+eng", "chi_sim", "chi_sim_vert+eng", "a" * 3])
def test_tesseract_codes_joined_by_plus_are_accepted(lang: str) -> None:
    assert UploadOptions(ocr_lang=lang).ocr_lang == lang


@pytest.mark.parametrize(
    "lang",
    [
        "",
        "de",  # two letters: ISO 639-1, not a tesseract code
        "Deutsch",
        "deu eng",
        "deu,eng",
        "deu+",
        "+deu",
        "deu++eng",
        "../deu",
        "deu;rm",
        "eng+osd",  # orientation data, not a language
        "deu+deu",
        "eng+deu+fra+spa+ita+por",  # six: over the bound
        "deu_" + "x" * 40,
    ],
)
def test_anything_else_is_refused_by_the_model(lang: str) -> None:
    with pytest.raises(ValidationError):
        UploadOptions(ocr_lang=lang)
    with pytest.raises(ValidationError):  # and on the bus, for upstream publishers
        DocumentUploaded(job_id=uuid.uuid4(), document_uri="blob://x", ocr_lang=lang)


# --- installed languages ------------------------------------------------------------------


def test_the_common_european_languages_are_installed() -> None:
    """`make install` (scripts/install_system_deps.sh) installs them; osd is no language."""
    languages = installed(Settings())
    assert languages >= EUROPEAN
    assert "osd" not in languages


def test_languages_are_listed_from_the_configured_folder(tmp_path: Path) -> None:
    for name in ("eng", "osd", "xyz"):
        (tmp_path / f"{name}.traineddata").write_bytes(b"")
    assert installed_languages(str(tmp_path)) == {"eng", "xyz"}


def test_the_sentence_names_the_missing_language_and_lists_the_installed() -> None:
    have = frozenset({"eng", "deu"})
    assert not_installed_sentence("deu+eng", have) is None
    assert not_installed_sentence("tlh", have) == (
        "The OCR language 'tlh' is not installed; installed: deu, eng."
    )
    assert not_installed_sentence("tlh+eng+qya", have) == (
        "The OCR languages 'tlh' and 'qya' are not installed; installed: deu, eng."
    )
    assert not_installed_sentence("eng", frozenset()) == (
        "The OCR language 'eng' is not installed; installed: none."
    )


def test_submit_refuses_a_language_that_is_not_installed() -> None:
    settings = Settings(ocr_lang="eng")
    with pytest.raises(OcrLanguageNotInstalled) as refused:
        checked_ocr_lang(JobOptions(ocr_lang="deu+tlh"), settings, ("body",))
    [error] = refused.value.errors
    assert error["loc"] == ("body", "ocr_lang")
    assert error["msg"].startswith("The OCR language 'tlh' is not installed; installed: ")
    assert "deu, eng" in error["msg"]
    assert checked_ocr_lang(JobOptions(ocr_lang="deu+eng"), settings, ()).ocr_lang == "deu+eng"
    # The deployment's default is spelled as absent: the event and the duplicate key as before.
    assert checked_ocr_lang(JobOptions(ocr_lang="eng"), settings, ()).ocr_lang is None
    assert checked_ocr_lang(JobOptions(), settings, ()).ocr_lang is None


def test_the_duplicate_key_tells_languages_apart_and_keeps_old_keys() -> None:
    sha = "ab" * 32
    default = dedup_key(sha, JobOptions())
    assert default == dedup_key(sha, JobOptions(ocr_lang=None))
    assert dedup_key(sha, JobOptions(ocr_lang="deu")) not in (default, None)
    assert dedup_key(sha, JobOptions(ocr_lang="deu")) != dedup_key(
        sha, JobOptions(ocr_lang="deu+eng")
    )


# --- the engine: languages, orientation, confidence ------------------------------------


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def scan(tmp_path: Path, lines: list[str], degrees: int = 0) -> str:
    image = text_image(lines)
    if degrees:
        image = image.rotate(degrees, expand=True)
    path = tmp_path / f"scan-{degrees}.png"
    image.save(path, dpi=(300, 300))
    return str(path)


def test_a_german_scan_read_in_german_keeps_its_umlauts(tmp_path: Path, engine: Engine) -> None:
    path = scan(tmp_path, GERMAN)
    expected = "\n".join(GERMAN)
    german = engine.recognise(path, "deu", DEFAULT_PSM, None, 60.0)
    english = engine.recognise(path, "eng", DEFAULT_PSM, None, 60.0)
    print(
        f"umlaut recall deu {umlaut_recall(expected, german.text):.2f} "
        f"eng {umlaut_recall(expected, english.text):.2f}; "
        f"CER deu {cer(expected, german.text):.3f} eng {cer(expected, english.text):.3f}"
    )
    assert umlaut_recall(expected, german.text) >= 0.9
    assert umlaut_recall(expected, german.text) > umlaut_recall(expected, english.text) + 0.3
    assert cer(expected, german.text) < cer(expected, english.text)
    assert german.confidence is not None and english.confidence is not None
    assert 0 <= english.confidence < german.confidence <= 100


@pytest.mark.parametrize("degrees", [90, 180])
def test_a_rotated_page_is_read_upright(tmp_path: Path, engine: Engine, degrees: int) -> None:
    path = scan(tmp_path, ENGLISH, degrees)
    unturned = engine.recognise(path, "eng", DEFAULT_PSM, None, None)  # orientation off
    reading = engine.recognise(path, "eng", DEFAULT_PSM, None, 60.0)
    expected = "\n".join(ENGLISH)
    assert cer(expected, unturned.text) > 0.3  # what a rotated page gave before
    assert reading.rotated == (360 - degrees) % 360
    assert cer(expected, reading.text) <= 0.03
    assert reading.confidence is not None and reading.confidence > 80


def test_an_upright_page_pays_no_orientation_detection(tmp_path: Path, engine: Engine) -> None:
    path = scan(tmp_path, ENGLISH)
    reading = engine.recognise(path, "eng", DEFAULT_PSM, None, 60.0)
    assert reading.rotated == 0 and not needs_orientation_check(reading, 60.0)
    assert cer("\n".join(ENGLISH), reading.text) <= 0.03
    record = reading.record()
    assert record["words"] == len(reading.confidences) > 10
    assert record["confidence"] is not None and 80 < record["confidence"] <= 100


def test_the_quick_check_asks_only_for_many_unsure_words() -> None:
    assert needs_orientation_check(Recognised("x", (40.0,) * 10), 60.0)
    assert not needs_orientation_check(Recognised("x", (40.0,) * 10), None)  # turned off
    assert not needs_orientation_check(Recognised("x", (90.0,) * 10), 60.0)
    assert not needs_orientation_check(Recognised("x", (10.0,) * 2), 60.0)  # a speck
    assert not needs_orientation_check(Recognised("", ()), 60.0)


# --- confidence through the page event and the result ---------------------------------


def test_a_pages_confidence_is_the_mean_over_its_words() -> None:
    page = PageOcr()
    page.add_reading(OcrResult("ten words", 0.1, None, confidence=90.0, words=10))
    page.add_reading(OcrResult("thirty", 0.1, None, confidence=50.0, words=30, rotated=180))
    page.add_reading(OcrResult("", 0.1, None))  # no words: no weight
    event = page.event(ImagesExtracted(job_id=uuid.uuid4(), page=2, images=[]), Settings())
    assert event.confidence == 60.0
    assert event.images_rotated == 1
    blank = PageOcr().event(ImagesExtracted(job_id=uuid.uuid4(), page=1, images=[]), Settings())
    assert blank.confidence is None and blank.images_rotated == 0
