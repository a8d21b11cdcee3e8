"""The analyzer's shortcuts change no result: each fast path is checked against the plain way
(the code as it was before them) on edge cases and on many generated texts."""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from collections.abc import Iterator

import numpy as np
import phonenumbers
import pytest

from services.analyzer import builtin, language
from services.analyzer.builtin import (
    _URL,
    _URL_TRAILING,
    MAX_KEYWORDS,
    PHONE_REGION,
    STOPWORDS,
    analyze_text,
    find_entities,
    keywords,
    word_count,
    words,
)
from services.analyzer.language import (
    MIN_LANGUAGE_CONFIDENCE,
    MIN_LANGUAGE_WORDS,
    detect_language,
)

# --- the plain ways --------------------------------------------------------------------


def plain_word_count(text: str) -> int:
    return sum(1 for token in text.split() if any(c.isalnum() for c in token))


def plain_keywords(text: str, limit: int = MAX_KEYWORDS) -> list[str]:
    counts = Counter(
        w
        for w in (w.casefold().replace("’", "'") for w in words(text))
        if len(w) >= 3 and not w.isdigit() and any(c.isalpha() for c in w) and w not in STOPWORDS
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:limit]]


@pytest.fixture(scope="module")
def stock_identifier():  # type: ignore[no-untyped-def]
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def plain_detect_language(identifier, text: str) -> str | None:  # type: ignore[no-untyped-def]
    text = re.sub(r"\d+", " ", text)
    if sum(1 for w in words(text) if any(c.isalpha() for c in w)) < MIN_LANGUAGE_WORDS:
        return None
    lang, confidence = identifier.classify(text)
    if confidence < MIN_LANGUAGE_CONFIDENCE or len(lang) != 2:
        return None
    return str(lang)


def plain_urls(text: str) -> Iterator[tuple[int, int]]:
    for m in _URL.finditer(text):
        start, end = m.start(), m.end()
        while end > start:
            last = text[end - 1]
            if last in _URL_TRAILING:
                end -= 1
            elif last == ")" and text.count("(", start, end) < text.count(")", start, end):
                end -= 1  # "(see https://x.org/a)": the bracket belongs to the sentence
            else:
                break
        if end - start > len("www."):
            yield start, end


def plain_spans(kind: str, text: str) -> list[tuple[int, int]]:
    if kind == "url":
        return list(plain_urls(text))
    if kind == "phone":  # the library's own matcher, without the digit-count shortcuts
        return [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(text, PHONE_REGION)]
    pattern = {"email": builtin._EMAIL, "date": builtin._DATE, "money": builtin._MONEY}[kind]
    return [m.span() for m in pattern.finditer(text)]


# --- texts -----------------------------------------------------------------------------

EDGE_CASES = [
    "",
    " ",
    "x",
    # amounts: symbols before and after, codes and words in any case, scales, other digits
    "Paid $5, €12, £3.50, ¥100, ₹250, US$3, A$4, C$ 5 and 7 US$ in all.",
    "Paid 5$, 12 €, 3.50£, 1.234,56 € and 1\u00a0234,56 € and 1\u202f234 € too.",
    "Fees: USD 100, usd100, Eur 5, 5 EUR, 7 gbp, 12 chf, 3 SGD; 4 NZD. 8 JPY.",
    "It cost 100 dollars, 1 dollar, 5 Euros, 3 pounds sterling, 9 cents, 4 yen and 2 francs.",
    "Budget: $5 million, €2bn, 3k$, 4 m€, 1,5 Mio. €, 2 Mrd. EUR, 7 thousand dollars.",
    "Long s: 5 uſd and uſd 5; Kelvin K: 5 \u212a; dotless: 5 ınr; İnr 5.",
    "Arabic-Indic digits: USD ١٢٣ and ١٢٣ USD; full-width ＄５.",
    "Percent, recent, European, audio, cadence, francophone: 12 of them, 2024.",
    "Money with no digit: dollars, euros, USD, $, €; digits with no money: 12 345.",
    "Symbols away from digits: ($@ !$ 12 $x €, 5 % and 4 ¥ 3 k € 2 Mio. $ 1bn £ 6 US $.",
    # dates in every pattern and language, and next to digits
    "Due 2024-01-31, 31/01/2024, 01.02.2024, 31-01-2024 and 1/2/2024 or 12.05.2023.",
    "Signed January 31, 2024; Jan. 31st 2024; jan 31 2024; SEPT. 3RD, 2023; ſept 3 2023.",
    "On 31 January 2024, the 1st of March, 2023, 31. Januar 2024 and 3 mars 2024.",
    "In März 2024, MÄRZ 2024, Maerz 2025, Juni 1999, juillet 2001, août 2020, aout 2021.",
    "Décembre 2022, decembre 2022, février 2023, fevrier 2023, Oktober 1990, Dezember 1700.",
    "Not dates: 131/01/2024, 2024-01-31-5, 5-2024-01-31, 31/01/20245, 01.02.2024.5, May 99.",
    "x2024-01-31 a1/2/2024 -2024-01-31 /31/01/2024 .31.01.2024 Jan2024 January  \n 2024",
    # URLs and e-mail addresses
    "See HTTPS://EXAMPLE.ORG/A, http://x.io/b?c=1. and WWW.EXAMPLE.COM or Www.x.org/path).",
    "Mail JANE@EXAMPLE.CO.UK or a.b+c@x.io; not @ alone or x@y.",
    # phone numbers, with and without enough digits, extensions and tables
    "Call (415) 555-2671 ext. 12, +44 20 7946 0958 x 3 or 212-736-5000;ext=9.",
    "Vienna +43 1 5555 or Berlin +49 30 1234; Niue +683 4002; NYC (212) 555-0100.",
    "12 ext. 345 and 1 ext 2345 and 123 x 45 and 12 #345 # and 1234 - 5#.",
    "170 90 197 10 1 4 6 391 828 1 11 4 0 0 2 0 0 0 0 10\n905 38 2) 100 000 5.5 338",
    "1-800-555-0199, 800.555.0199, 8005550199, abc8005550199, 8005550199def, $8005550199",
    "Fax: +33 1 42 68 53 00 / +33 1 42 68 53 01; tel. 030/1234567; 030 / 12 34 56 7.",
    "１２３４５６７８９０ and ٠١٢٣٤٥٦٧٨٩ and 415\u00a0555\u00a02671 and 415\u2010555\u20102671.",
    "Times 2024-01-31 12:30, 20240131 1230:45; pages 211-227 (2003); 12/05/2023.",
    # words: apostrophes, underscores, numbers inside words, non-Latin scripts
    "Don't stop: it's the dog’s bone, l'homme, O’Neil_s file_name x2 2x ½ ² Ⅻ _ __ .",
    "Der Vertrag und der Vertrag 12345 für die Lieferung mit 2024 und 1st.",
    "日本語のテキストです。これはテストです。東京都 2024年1月31日",
    "Ελληνικά κείμενα εδώ και εκεί. Русский текст тоже здесь, да.",
    "\u00a0tabs\tand\u2003em\u2003spaces\u200band zero width\u3000ideographic\nnew\rline",
    "ΣΑΣ İstanbul ǅemal ß STRASSE ﬁne ﬂow",
]

FRAGMENTS = [
    *("$", "€", "£", "¥", "₹", "US$", "A$", "C$", "USD", "eur", "Eur", "GBP", "dollars"),
    *("cents", "yen", "pounds sterling", "francs", "k", "m", "bn", "million", "Mio.", "Mrd"),
    *("12", "1,234.56", "1.234,56", "1\u00a0234,56", "1\u202f234", "5", "100", "2024", "1999"),
    *("31", "01", "/", ".", "-", ",", " ", "  ", "\n", "(", ")", "#", "%", "+", "+1", ":"),
    *("(415) 555-2671", "+44 20 7946 0958", "212-736-5000", "+33 1 42 68 53 00", "415"),
    *("+49 30 901820", "+43 1 5555", "+683 4002", "555", "0100", "ext. 12", "x", "tel:"),
    *("January", "Jan.", "31st", "of", "März", "mars", "août", "Sept", "3rd", "10:30"),
    *("https://ex.com/a", "www.x.org", "WWW.Y.COM", "bob@ex.com", "a@b.co", "’", "'"),
    *("don't", "The", "the", "and", "über", "contract", "Vertrag", "le", "renard", "chien"),
    *("١٢٣٤٥", "１２３４５６７８", "٣", "²", "½", "Ⅻ", "_", "ﬁ", "İ", "ı", "ſ", "\u212a"),
    *("ß", "ΣΑΣ", "日本語", "テキスト", "12a", "a12", "1.2.3", "12.50", "ISBN 978-3-16-148410-0"),
]


def generated_texts(count: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    seps = ["", " ", " ", "  ", "\n", ", ", "-", "/"]
    return [
        "".join(rng.choice(FRAGMENTS) + rng.choice(seps) for _ in range(rng.randint(1, 40)))
        for _ in range(count)
    ]


TEXTS = EDGE_CASES + generated_texts(1500)


# --- the checks ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["email", "url", "date", "money", "phone"])
def test_each_finder_finds_what_the_plain_search_finds(kind: str) -> None:
    finder = builtin._FINDERS[kind]
    found = 0
    for text in TEXTS:
        spans = list(finder(text))
        assert spans == plain_spans(kind, text), text
        found += len(spans)
    assert found > 20  # the texts do have some of each


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("The fee is 5 uſd.", "5 uſd"),  # long s: matches "s" case-insensitively
        ("Total ١٢٣ USD due.", "١٢٣ USD"),  # any decimal digit
        ("Total USD١٢٣ due.", "USD١٢٣"),
        ("About 3k$ each.", "3k$"),
        ("Raised 1,5 Mio. € so far.", "1,5 Mio. €"),
        ("Only 7 US$ left.", "7 US$"),
        ("Only A$4 left.", "A$4"),
        ("It was 3 pounds sterling.", "3 pounds sterling"),
        ("It was 3 POUNDS.", "3 POUNDS"),
        ("Just 5 Francs.", "5 Francs"),
        # a symbol after the scale of the amount: its last letter comes before the symbol
        ("Paid 5 thousand $ in all.", "5 thousand $"),
        ("Paid 3 k$ in all.", "3 k$"),
        ("Paid 3 \u212a$ in all.", "3 \u212a$"),  # Kelvin sign: "k" case-insensitively
        ("Paid 2 Mrd € in all.", "2 Mrd €"),
        ("Paid 5bn$ in all.", "5bn$"),
        ("Paid 7 million C$ in all.", "7 million C$"),
        ("Paid US$ 5 in all.", "US$ 5"),
        ("Paid $\u00a05 in all.", "$\u00a05"),
        ("Paid 5\u00a0€ in all.", "5\u00a0€"),
    ],
)
def test_money_prefilter_keeps_unusual_amounts(text: str, amount: str) -> None:
    assert [(e.kind, e.text) for e in find_entities(text)] == [("money", amount)]


@pytest.mark.parametrize(
    ("text", "date"),
    [
        ("Since ſept 3, 2023 it is.", "ſept 3, 2023"),
        ("Since MÄRZ 2024 it is.", "MÄRZ 2024"),
        ("Since 3 août 2020 it is.", "3 août 2020"),
        ("Since the 1st of March, 2023 it is.", "1st of March, 2023"),
        ("Since x2024-01-31 it is.", "2024-01-31"),  # a letter before the year is fine
        ("Since a1/2/2024 it is.", "1/2/2024"),
    ],
)
def test_date_starts_keep_unusual_dates(text: str, date: str) -> None:
    assert [(e.kind, e.text) for e in find_entities(text)] == [("date", date)]


def test_dates_next_to_digits_are_still_refused() -> None:
    # The patterns' lookbehinds see the text before where the scan starts trying.
    for text in ("131/01/2024", "5-2024-01-31", "12024-01-31", "2024-01-31-5"):
        assert list(builtin._dates(text)) == [] == plain_spans("date", text)


@pytest.mark.parametrize(
    "text",
    ["Visit WWW.EXAMPLE.COM today.", "Visit HTTPS://EXAMPLE.COM today.", "Visit Www.x.org/a."],
)
def test_url_prefilter_is_case_insensitive(text: str) -> None:
    assert [e.kind for e in find_entities(text)] == ["url"]


def test_only_w_matches_w_case_insensitively() -> None:
    # The URL pre-filter looks for "www." in text.lower().
    w = re.compile("w", re.IGNORECASE)
    assert [c for c in map(chr, range(sys.maxunicode + 1)) if w.fullmatch(c)] == ["W", "w"]


@pytest.mark.parametrize(
    "text",
    [
        "12 ext. 345",  # the extension's digits make up the five
        "Call (415) 555-2671 ext. 12 now.",
        "Row: 170 90 197 10 1 4 6 391 828 1 11 4 0 0 2 0 0 0 0 10, then (212) 555-0100.",
        "Vienna +43 1 5555 or Berlin +49 30 1234; Niue +683 4002.",
        "+1 415 555 0100 / 0101 and 415.555.0102",
    ],
)
def test_phones_same_as_the_library(text: str) -> None:
    assert list(builtin._phones(text)) == plain_spans("phone", text)


def test_word_count_same_as_plain() -> None:
    for text in TEXTS:
        assert word_count(text) == plain_word_count(text), text


def test_word_count_regex_classes_are_the_str_methods() -> None:
    # word_count() counts matches of [^\W_]\S*: exact only while these agree everywhere.
    alnum, space = re.compile(r"[^\W_]"), re.compile(r"\s")
    for c in map(chr, range(sys.maxunicode + 1)):
        assert bool(alnum.match(c)) == c.isalnum(), hex(ord(c))
        assert bool(space.match(c)) == c.isspace(), hex(ord(c))
        assert (len(f"a{c}b".split()) == 2) == c.isspace(), hex(ord(c))


def test_keywords_same_as_plain() -> None:
    for text in TEXTS:
        assert keywords(text) == plain_keywords(text), text
        assert keywords(text, limit=2) == plain_keywords(text, limit=2), text


def test_keywords_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builtin, "_KEYWORD_CACHE_MAX", 10)
    builtin._KEYWORD_OF.clear()
    most_words = 0
    for text in TEXTS[:200]:
        assert keywords(text) == plain_keywords(text)
        most_words = max(most_words, len(words(text)))
        assert len(builtin._KEYWORD_OF) <= 10 + most_words


LANGUAGE_TEXTS = [
    "Please send the quarterly report to the whole team before Friday.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le renard brun rapide saute par-dessus le chien paresseux.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "日本語のテキストです。これはテストです。",
    "Ελληνικά κείμενα εδώ και εκεί και παντού.",
    "asdf qwer zxcv",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "\x16\x08\x1f\x15 garbled $ text from a \x0c\x1e font here",
]


def test_language_scores_same_as_the_library(stock_identifier) -> None:  # type: ignore[no-untyped-def]
    ours = language._identifier()
    assert ours.nb_ptc.dtype == np.float32
    for text in LANGUAGE_TEXTS + TEXTS[:400]:
        assert np.array_equal(ours._decide(text), stock_identifier._decide(text)), text
        assert detect_language(text) == plain_detect_language(stock_identifier, text), text


def walk_samples() -> list[bytes]:
    rng = random.Random(3)
    common = b"the and of to in is was for that with on as by at be this from er en de "
    return [
        b"",
        b"a",
        b" ",
        bytes(range(256)),
        bytes(range(255, -1, -1)),
        b"abcabcabcabc" * 20,
        b'x\n"A',  # feature 0
        *(bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))) for _ in range(200)),
        *(bytes(rng.choice(common) for _ in range(rng.randint(1, 400))) for _ in range(200)),
        *(text.encode("utf-8", "surrogatepass") for text in TEXTS[:300] + LANGUAGE_TEXTS),
    ]


def test_automaton_walk_same_as_the_library(stock_identifier) -> None:  # type: ignore[no-untyped-def]
    from py3langid.langid import visit_counts

    ours = language._identifier()
    assert 1 <= ours._depth <= language._MAX_AUTOMATON_DEPTH  # else it falls back (tested below)
    for data in walk_samples():
        expected = visit_counts(ours.tk_nextmove, ours._rowbase, ours.tk_output, data)
        found = ours._visit_counts(data)
        assert found == expected, data
        assert found is None or list(found) == list(expected), data  # same order: same sums
        assert np.array_equal(ours._decide(data), stock_identifier._decide(data)), data
    assert 0 in ours._visit_counts(b'x\n"A')


def test_automaton_walk_falls_back_to_the_library(monkeypatch: pytest.MonkeyPatch) -> None:
    from py3langid.langid import visit_counts

    monkeypatch.setattr(language, "_MAX_AUTOMATON_DEPTH", 0)
    ours = language._identifier()
    for data in walk_samples()[:50]:
        expected = visit_counts(ours.tk_nextmove, ours._rowbase, ours.tk_output, data)
        assert ours._visit_counts(data) == expected


def test_analysis_same_as_plain(stock_identifier) -> None:  # type: ignore[no-untyped-def]
    for text in EDGE_CASES + LANGUAGE_TEXTS:
        analysis = analyze_text(text)
        assert analysis.word_count == plain_word_count(text)
        prose = builtin._without(text, analysis.entities)
        assert analysis.keywords == plain_keywords(prose)
        assert analysis.language == plain_detect_language(stock_identifier, prose)
