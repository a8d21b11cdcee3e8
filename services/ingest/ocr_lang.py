"""A job's OCR languages at submit: refused when one is not installed (422 with a sentence
naming it and listing the installed ones), and the deployment's default spelled as absent, so
that naming the default changes neither the event nor the duplicate key."""

from __future__ import annotations

from typing import TypeVar

import structlog

from services.ingest.errors import OcrLanguageNotInstalled
from services.ingest.models import JobOptions
from shared.ocr_languages import installed_languages, not_installed_sentence
from shared.settings import Settings

log = structlog.get_logger(__name__)

Options = TypeVar("Options", bound=JobOptions)


def installed(settings: Settings) -> frozenset[str]:
    """The languages the OCR engine can load here (listed once per process)."""
    tessdata = settings.ocr_tessdata_dir
    return installed_languages(str(tessdata) if tessdata is not None else None)


def log_installed(settings: Settings) -> None:
    """List the languages once at start-up, so the first submit does not pay for it."""
    log.info("ocr languages installed", languages=sorted(installed(settings)))


def checked_ocr_lang(options: Options, settings: Settings, loc: tuple[str, ...]) -> Options:
    """The options with an installed ocr_lang (None when it is the deployment's default);
    OcrLanguageNotInstalled (422) naming what is missing."""
    lang = options.ocr_lang
    if lang is None:
        return options
    if lang == settings.ocr_lang:
        return options.model_copy(update={"ocr_lang": None})
    sentence = not_installed_sentence(lang, installed(settings))
    if sentence is not None:
        raise OcrLanguageNotInstalled((*loc, "ocr_lang"), sentence)
    return options
