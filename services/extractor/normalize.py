"""Text normalisation shared by every format: one Unicode form, no control characters."""

from __future__ import annotations

import re
import unicodedata

# Invisible characters that only get in the way of search and chunking: BOM, soft hyphen,
# zero-width space and the bidi embedding controls (the text is stored in logical order).
_INVISIBLE = dict.fromkeys(
    map(ord, "\ufeff\u00ad\u200b\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
)
# Category Cc except tab and newline, plus lone surrogates (not encodable as UTF-8).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_MANY_BLANK_LINES = re.compile(r"\n{3,}")

# A page counts as having a text layer when it holds at least this many letters or digits;
# fewer (a page number, a stray header) means the content is an image that needs OCR.
TEXT_LAYER_MIN_CHARS = 16


def normalize_text(text: str) -> str:
    """NFKC (folds ligatures, Arabic presentation forms, full-width forms), unify newlines,
    and drop control characters except newline and tab, and lone surrogates."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_INVISIBLE)
    text = _CONTROL.sub("", text)
    text = _TRAILING_SPACE.sub("\n", text)
    text = _MANY_BLANK_LINES.sub("\n\n", text)
    return text.strip()


def content_chars(text: str) -> int:
    """Letters and digits: what makes text worth reading (punctuation runs do not)."""
    return sum(1 for ch in text if ch.isalnum())


def has_text_layer(text: str) -> bool:
    return content_chars(text) >= TEXT_LAYER_MIN_CHARS
