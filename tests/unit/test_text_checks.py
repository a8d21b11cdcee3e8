"""The per-page text checks (normalize.content_chars/has_text_layer, pdf_checks.garbage_ratio and
suspicion) count with C-level passes; they must answer exactly as the straightforward
definitions below."""

from __future__ import annotations

import random
import re

import pytest

from services.extractor import normalize
from services.extractor.formats import pdf_checks
from services.extractor.formats.pdf_checks import garbage_ratio, glued_words, suspicion, word_counts
from services.extractor.normalize import TEXT_LAYER_MIN_CHARS, content_chars, has_text_layer

# --- the definitions, as they were written before they were made fast ---------------------


def ref_content_chars(text: str) -> int:
    return sum(1 for ch in text if ch.isalnum())


def ref_has_text_layer(text: str) -> bool:
    return ref_content_chars(text) >= TEXT_LAYER_MIN_CHARS


def ref_garbage_ratio(text: str) -> float:
    visible = [ch for ch in text if not ch.isspace()]
    if not visible:
        return 0.0
    bad = sum(1 for ch in visible if ch == "\ufffd" or "\ue000" <= ch <= "\uf8ff")
    return bad / len(visible)


def ref_word_counts(text: str) -> tuple[int, int, int]:
    tokens = re.findall(r"\w+", text)
    letters = [t for t in tokens if t.isalpha()]
    return len(tokens), len(letters), sum(len(t) == 1 for t in letters)


def ref_glued(text: str) -> int:
    return len(re.findall(r"[a-z]{2,}[A-Z][a-z]", text))


def ref_suspicion(text: str) -> str | None:
    if not ref_has_text_layer(text):
        return "little or no text"
    if ref_garbage_ratio(text) > pdf_checks.GARBAGE_SHARE:
        return "replacement or private-use characters"
    if pdf_checks._RTL_OR_VERTICAL.search(text):
        return "right-to-left or vertical script"
    tokens = re.findall(r"\w+", text)
    letters = [t for t in tokens if t.isalpha()]
    if len(letters) >= 20 and sum(len(t) == 1 for t in letters) > 0.3 * len(letters):
        return "letter-spaced words"
    glued = ref_glued(text)
    if glued >= 2 and glued > pdf_checks.GLUED_WORDS_SHARE * len(tokens):
        return "words run together"
    return None


def same_glued(fast: int, slow: int) -> bool:
    """glued_words is exact from 2 up; below 2 it only has to stay below 2."""
    return fast == slow if slow >= 2 else fast < 2


# --- the cases -----------------------------------------------------------------------------

# Where `\w`, str.isalnum, str.isalpha, str.isdecimal and str.isspace part ways, and the
# characters the checks single out.
TRICKY = [
    "",
    " ",
    "_",
    "snake_case_name",
    "__init__ a_b _x_",
    "x² ½ ¾ ² ³ ¹",  # isdigit/isnumeric, not isdecimal: alnum, not alpha
    "٣٤٥ ١٢ ۱۲۳",  # Arabic-Indic digits
    "Ⅻ ⅻ ↈ 〇 一二三",  # letter numbers
    "ª º µ ß ÿ Ÿ ǅ",  # lowercase-ish letters outside a-z
    "e\u0301 e\u0308 a\u0323",  # combining marks: not alnum
    "\u00a0\u2000\u2028\u2029\u3000\u1680\u202f\u205f\x85\x1c\x1d\x1e\x1f\x0b\x0c",
    "\u200b\ufeff\u00ad\u2060",  # invisible, not space
    "\ufffd\ue000\uf8ff\ue123 \U000f03d9 \U00100000",  # replacement, BMP and plane 15/16 PUA
    "\ud800 \udfff x\ud83d",  # lone surrogates
    "😀 👍🏽 🇩🇪",
    "日本語のテキスト、縦書き。",
    "مرحبا بالعالم ١٢٣",
    "שלום עולם",
    "N O T I C E  T O  A L L  C U S T O M E R S  O F  T H E  B A N K  H E R E",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z é ü ß",
    "SamuelCleveland and JohnSmith went to TheMarket",
    "abCdeFg abCdefGh aBc abcDEf iPhone McDonald",
    "x" * 15,
    "x" * 16,
    "-" * 40 + "1234567890abcdef",
    "1.2.3.4.5.6.7.8 9 0 1 2 3 4 5 6 7",
    "A1 B2 c3 4d e_f ü1 ²a",
    "tab\tnewline\nreturn\rff\x0cvt\x0bend",
    "\x00\x01\x7f\x80\x9f\xa0\xad",
    "Ǆemal ǅemal ǆemal",
    "ﬁnd ﬂow ﬀ",  # ligatures (before NFKC): letters
    "Ⓐⓑ ① ⑴ ⒈",  # circled letters are alpha? circled digits are numeric
    "𝐀𝐁𝐂 𝟏𝟐𝟑",  # mathematical alphanumerics
]

ALPHABET = (
    "abcdeXYZ019_ .,;-\n\t"
    "éüßÆ²½٣Ⅻ一日本\u0301\u00a0\u2028\u3000\u200b\ufffd\ue000\uf8ff\U000f03d9😀مש\ud800"
)


def random_texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([0, 1, 2, 5, 15, 16, 17, 40, 300])
        pool = ALPHABET if rng.random() < 0.5 else "abcdefghABC xyzQ "
        out.append("".join(rng.choice(pool) for _ in range(length)))
    return out


CASES = TRICKY + random_texts(3000)


def test_content_chars_and_text_layer_match_isalnum() -> None:
    for text in CASES:
        assert content_chars(text) == ref_content_chars(text), repr(text)
        assert has_text_layer(text) == ref_has_text_layer(text), repr(text)


def test_garbage_ratio_matches() -> None:
    for text in CASES:
        assert garbage_ratio(text) == ref_garbage_ratio(text), repr(text)


def test_word_counts_and_glued_match() -> None:
    for text in CASES:
        assert word_counts(text) == ref_word_counts(text), repr(text)
        assert same_glued(glued_words(text), ref_glued(text)), repr(text)


def test_suspicion_matches() -> None:
    for text in CASES:
        assert suspicion(text) == ref_suspicion(text), repr(text)
    # Each reason, at least once, so the comparison covers every branch.
    reasons = {ref_suspicion(text) for text in CASES}
    assert {"little or no text", "replacement or private-use characters"} <= reasons
    assert {"right-to-left or vertical script", "letter-spaced words"} <= reasons
    assert "words run together" in reasons and None in reasons


@pytest.mark.parametrize(
    "text",
    [
        "abCdeFg " * 3,  # the second triple overlaps the first match: not a second match
        "SamuelCleveland " + "word " * 150 + "JohnSmith",  # 2 glued, too few for the share
        "SamuelCleveland JohnSmith " + "word " * 50,
    ],
)
def test_glued_edge_cases(text: str) -> None:
    assert same_glued(glued_words(text), ref_glued(text))
    assert suspicion(text) == ref_suspicion(text)


def test_text_layer_threshold_edges() -> None:
    for n in (TEXT_LAYER_MIN_CHARS - 1, TEXT_LAYER_MIN_CHARS):
        for sep in ("", " ", "_", "--", "\u0301", "\u00a0", "\ufffd"):
            text = sep.join("é" * n) + sep
            assert has_text_layer(text) == (n >= TEXT_LAYER_MIN_CHARS), repr(text)
            assert content_chars(text) == n
    # A long page with too few letters: one pass, no backtracking blow-up.
    assert not has_text_layer(("." * 10_000 + "a") * 15 + "_" * 100_000)


def test_every_code_point() -> None:
    """The regex and bytes classes agree with the str methods on all of Unicode."""
    everything = "".join(map(chr, range(0x110000)))
    # Character by character: sums alone could hide two mistakes that cancel out.
    alnum = "".join(ch for ch in everything if ch.isalnum())
    assert normalize._NOT_ALNUM.sub("", everything) == alnum
    assert pdf_checks._SPACE.sub("", everything) == "".join(
        ch for ch in everything if not ch.isspace()
    )
    classes = everything.encode("ascii", pdf_checks._WORD_CLASS_ERRORS).translate(
        pdf_checks._WORD_CLASS_TABLE
    )
    expected = "".join(
        "a" if ch.isalpha() else "0" if ch.isalnum() or ch == "_" else " " for ch in everything
    )
    assert classes == expected.encode()
    assert "".join(re.findall(r"\w", everything)) == "".join(
        ch for ch in everything if ch.isalnum() or ch == "_"
    )
    assert content_chars(everything) == ref_content_chars(everything)
    assert garbage_ratio(everything) == ref_garbage_ratio(everything)
    # One character per word, so each character's class shows in the counts.
    spaced = " ".join(everything)
    assert word_counts(spaced) == ref_word_counts(spaced)
    assert word_counts(everything) == ref_word_counts(everything)
