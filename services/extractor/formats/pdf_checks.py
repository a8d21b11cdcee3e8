"""Checks on one engine's text of a PDF page: whether it looks wrong, and why. They decide which
engine reads a page (pdf.page_text): pdfium's text that fails them is read again by pypdf, and a
page whose pypdf text fails them too by pdfminer (pdf_miner.py)."""

from __future__ import annotations

import codecs
import re

from services.extractor.normalize import has_text_layer, non_ascii

# garbage_ratio and suspicion run on every page (several times on a suspicious one); they count
# with passes in C instead of a Python loop over the characters (see normalize.py).
_ASCII_SPACE = bytes(b for b in range(128) if chr(b).isspace())
_SPACE = re.compile(r"\s+")  # exactly str.isspace()
_GARBAGE = re.compile("[\ufffd\ue000-\uf8ff]")  # all non-ASCII, none of them space


def garbage_ratio(text: str) -> float:
    """Share of visible characters that are replacement, private-use or unassigned glyphs."""
    rest = non_ascii(text)
    visible = len(text.encode("ascii", "ignore").translate(None, _ASCII_SPACE))
    if rest:
        visible += len(_SPACE.sub("", rest))
    if not visible:
        return 0.0
    bad = len(_GARBAGE.findall(rest)) if rest else 0
    return bad / visible


# Scripts pdfium gets wrong and pypdf gets right: right-to-left text comes out in visual
# order or without its ligatures, and vertical CJK fonts come out letter by letter.
_RTL_OR_VERTICAL = re.compile(
    "[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufeff\ufe10-\ufe1f\ufe30-\ufe4f\u3000-\u30ff]"
)
_TOKEN = re.compile(r"\w+")
# Two words run together ("SamuelCleveland"): pdfium's space detection misses some gaps.
_GLUED = re.compile(r"[a-z]{2,}[A-Z][a-z]")
SPACED_LETTERS_SHARE = 0.3  # "N O T I C E": a vertical or letter-spaced font
GLUED_WORDS_SHARE = 0.01
GARBAGE_SHARE = 0.01

# One byte per character of a text, so the words (_TOKEN's matches) can be counted with bytes
# methods: b"a" for a letter (str.isalpha), b"0" for another word character (str.isalnum or
# "_", i.e. `\w`), b" " for the rest. ASCII goes through a translate table; the few other
# characters through an encode error handler, which is handed whole runs of them.
_WORD_CLASS_TABLE = (
    bytes(
        ord("a") if chr(b).isalpha() else ord("0") if chr(b).isalnum() or b == ord("_") else 32
        for b in range(128)
    )
    + b" " * 128
)
_WORD_CLASS_ERRORS = "docpipe-word-class"


def _word_class_errors(exc: UnicodeError) -> tuple[str, int]:
    assert isinstance(exc, UnicodeEncodeError)
    run = exc.object[exc.start : exc.end]
    classes = "".join("a" if ch.isalpha() else "0" if ch.isalnum() else " " for ch in run)
    return classes, exc.end


codecs.register_error(_WORD_CLASS_ERRORS, _word_class_errors)
_NOT_ONLY_LETTERS = re.compile(rb"0[a0]*")  # one match per word holding a non-letter
# [a-z] then [A-Z] then [a-z], as b"lUl" in a text mapped by this table (non-ASCII becomes "?").
_CASE_TABLE = bytes(
    ord("l") if 97 <= b <= 122 else ord("U") if 65 <= b <= 90 else 32 for b in range(256)
)


def word_counts(text: str) -> tuple[int, int, int]:
    """(words, words of letters only, one-letter words): the counts of `_TOKEN.findall(text)`,
    of those `t.isalpha()`, and of those of length 1."""
    classes = text.encode("ascii", _WORD_CLASS_ERRORS).translate(_WORD_CLASS_TABLE)
    words = classes.split()
    letters = len(words) - len(_NOT_ONLY_LETTERS.findall(classes))
    return len(words), letters, words.count(b"a")


def glued_words(text: str) -> int:
    """len(_GLUED.findall(text)) when that is 2 or more; may be less when it is below 2.

    Every match ends in lowercase-uppercase-lowercase, and matches do not overlap: so fewer
    than 2 such triples (counted without overlap: as many as can be) means fewer than 2
    matches, and the slow regex only runs on the few pages with 2 or more."""
    triples = text.encode("ascii", "replace").translate(_CASE_TABLE).count(b"lUl")
    return triples if triples < 2 else len(_GLUED.findall(text))


def suspicion(text: str) -> str | None:
    """Why pdfium's text of a page may be wrong (then pypdf reads it too), or None."""
    if not has_text_layer(text):
        return "little or no text"
    if garbage_ratio(text) > GARBAGE_SHARE:
        return "replacement or private-use characters"
    if _RTL_OR_VERTICAL.search(text):
        return "right-to-left or vertical script"
    return word_suspicion(text)


def word_suspicion(text: str) -> str | None:
    """Whether the words look letter-spaced or run together, or None."""
    tokens, letters, single_letters = word_counts(text)
    if letters >= 20 and single_letters > SPACED_LETTERS_SHARE * letters:
        return "letter-spaced words"
    glued = glued_words(text)
    if glued >= 2 and glued > GLUED_WORDS_SHARE * tokens:
        return "words run together"
    return None


# pypdf writes a glyph it cannot map to Unicode as the glyph's name: "/g18", "/uni00A0", "/cid7".
_GLYPH_NAME = re.compile(r"/(?:g|G|cid|uni|glyph)[0-9A-Fa-f]+")
GLYPH_NAMES_SHARE = 0.3


def glyph_name_share(text: str) -> float:
    """Share of the visible characters that are glyph names pypdf could not decode."""
    names = sum(len(m) for m in _GLYPH_NAME.findall(text))
    if not names:
        return 0.0
    return names / max(1, len("".join(text.split())))


# A letter standing alone between two words, where no language in Latin script writes a
# one-letter word: "currentl y t aking", "Sout h Caroli na". pypdf breaks words so when a font's
# glyph widths disagree with its spacing; the letters that are words somewhere (a e i o u y in
# Romance languages, k s v z in Czech or Polish, w in Polish) are left out so that such text
# does not count. Lowercase only: "Plan B" and "U S C" are words or initials.
_STRAY_LETTER = re.compile(r"(?<=[^\W\d_]) [b-df-hjl-np-rtx](?= [^\W\d_])")
STRAY_LETTERS_MIN = 2
STRAY_LETTERS_SHARE = 0.005


def stray_letters(text: str) -> int:
    """How many letters stand alone between two words where no word is one letter long."""
    return len(_STRAY_LETTER.findall(text))


def careful_suspicion(text: str) -> str | None:
    """Why pypdf's (or pdfminer's) text of a page still looks wrong, or None: `suspicion` less
    the script test (right-to-left and vertical text is what pdfium alone gets wrong), and
    words broken apart."""
    if not has_text_layer(text):
        return "little or no text"
    if garbage_ratio(text) > GARBAGE_SHARE:
        return "replacement or private-use characters"
    reason = word_suspicion(text)
    if reason is not None:
        return reason
    stray = stray_letters(text)
    if stray >= STRAY_LETTERS_MIN and stray > STRAY_LETTERS_SHARE * word_counts(text)[0]:
        return "words broken apart"
    return None
