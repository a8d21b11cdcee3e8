"""OCR languages: the syntax of a job's `ocr_lang` (tesseract codes joined by '+', e.g.
`deu+eng`) and the languages installed where the OCR engine looks for them.

Ingest refuses a language that is not installed (422 with a sentence naming it and listing
what is), so a job never reaches OCR only to fail every page; the OCR engine reads its data from
the same folder (find_tessdata), so what ingest lists is what tesseract can load.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field

# A tesseract code: three letters, then up to two qualifiers ("chi_sim", "deu_latf",
# "chi_sim_vert"). Case-sensitive, as tesseract's file names are.
_CODE = r"[a-z]{3}(?:_[a-z]{3,4}){0,2}"
OCR_LANGS_PER_JOB_MAX = 5
OCR_LANG_MAX = 64  # five of the longest codes and their '+'
OCR_LANG_PATTERN = rf"^{_CODE}(?:\+{_CODE}){{0,{OCR_LANGS_PER_JOB_MAX - 1}}}$"
_OCR_LANG = re.compile(OCR_LANG_PATTERN)

# Orientation and script detection's data: needed for turning pages upright, not a language
# a page can be read in.
OSD = "osd"

# Where distributions put tesseract's language data, in the order they are tried.
_TESSDATA_GLOBS = (
    "/usr/share/tesseract-ocr/*/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


def codes_of(lang: str) -> list[str]:
    return lang.split("+")


def valid_ocr_lang(lang: str) -> bool:
    return bool(_OCR_LANG.match(lang)) and len(lang) <= OCR_LANG_MAX


def _check_codes(lang: str) -> str:
    codes = codes_of(lang)
    if OSD in codes:
        raise ValueError("'osd' detects orientation and script; it is not a language to read")
    if len(set(codes)) != len(codes):
        raise ValueError(f"'{lang}' names a language twice")
    return lang


# A job's OCR language(s), checked strictly wherever it enters (HTTP options, the bus).
OcrLang = Annotated[
    str,
    Field(
        max_length=OCR_LANG_MAX,
        pattern=OCR_LANG_PATTERN,
        description="Tesseract language codes joined by '+', e.g. 'deu+eng' "
        f"(at most {OCR_LANGS_PER_JOB_MAX}).",
        examples=["deu+eng"],
    ),
    AfterValidator(_check_codes),
]


@functools.cache  # asked per image and per submit; the folders do not move while we run
def find_tessdata(configured: str | None = None) -> str | None:
    """The language-data folder: the configured one, TESSDATA_PREFIX, or the distribution's."""
    candidates = [configured, os.environ.get("TESSDATA_PREFIX")]
    for pattern in _TESSDATA_GLOBS:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))  # newest version first
    for candidate in candidates:
        if candidate and any(Path(candidate).glob("*.traineddata")):
            return candidate.rstrip("/") + "/"
    return None


@functools.cache  # listed once per process: installing a language means restarting services
def installed_languages(configured: str | None = None) -> frozenset[str]:
    """The languages tesseract can read with (its `--list-langs`, without osd)."""
    folder = find_tessdata(configured)
    if folder is None:
        return frozenset()
    return frozenset(p.stem for p in Path(folder).glob("*.traineddata")) - {OSD}


def missing_languages(lang: str, installed: frozenset[str]) -> list[str]:
    return [code for code in codes_of(lang) if code not in installed]


def not_installed_sentence(lang: str, installed: frozenset[str]) -> str | None:
    """A sentence naming the languages of `lang` that are not installed (None: all are)."""
    missing = missing_languages(lang, installed)
    if not missing:
        return None
    named = " and ".join(f"'{code}'" for code in missing)
    verb = "is" if len(missing) == 1 else "are"
    noun = "language" if len(missing) == 1 else "languages"
    listed = ", ".join(sorted(installed)) or "none"
    return f"The OCR {noun} {named} {verb} not installed; installed: {listed}."
