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


# The functions below count letters and digits with passes in C rather than one character at
# a time (docs/decisions/0405-extraction-shortcuts.md): ASCII characters (nearly all of most
# text) are counted as bytes, and only the others are looked at by the regex engine. In a str
# pattern `\w` is exactly `str.isalnum()` plus "_", and `\s` exactly `str.isspace()` (sre uses
# the same Unicode tests as str), so `[^\W_]` is exactly `str.isalnum()`;
# tests/unit/test_text_checks.py checks every code point.
_NOT_ASCII_ALNUM = bytes(b for b in range(256) if not (b < 128 and chr(b).isalnum()))
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+")
_NOT_ALNUM = re.compile(r"[\W_]+")
# At least TEXT_LAYER_MIN_CHARS letters or digits, whatever lies between: an anchored match
# that stops as soon as it has seen enough (most pages: within the first line). Possessive, so a
# page with too few fails in one pass without backtracking.
_ENOUGH_CONTENT = re.compile(rf"[\W_]*+(?:[^\W_][\W_]*+){{{TEXT_LAYER_MIN_CHARS}}}")


def non_ascii(text: str) -> str:
    """The text's non-ASCII characters, in order ("" for ASCII text, at no cost)."""
    return "" if text.isascii() else _ASCII_RUNS.sub("", text)


def content_chars(text: str) -> int:
    """Letters and digits: what makes text worth reading (punctuation runs do not).

    The number of characters for which `str.isalnum()` is true."""
    count = len(text.encode("ascii", "ignore").translate(None, _NOT_ASCII_ALNUM))
    rest = non_ascii(text)
    return (count + len(_NOT_ALNUM.sub("", rest))) if rest else count


def has_text_layer(text: str) -> bool:
    """content_chars(text) >= TEXT_LAYER_MIN_CHARS, without counting past that."""
    return _ENOUGH_CONTENT.match(text) is not None
