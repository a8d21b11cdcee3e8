"""The built-in, offline chunk analysis: language, word count, keywords and entities.

Pure and deterministic: the same text always gives the same Analysis, in a stable order.
Entity offsets index the text passed in (the chunk's text), so text[start:end] == entity.text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import phonenumbers

from services.analyzer.language import detect_language, load_identifier
from shared.events import Analysis, Entity

ANALYZER_ID = "builtin/1"
MAX_KEYWORDS = 8
PHONE_REGION = "US"

# --- words and keywords ------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")

_STOPWORDS_TEXT = {
    "en": """a about above after again against all also am an and any are aren't as at be because
        been before being below between both but by can can't cannot could couldn't did didn't do
        does doesn't doing don't down during each few for from further had hadn't has hasn't have
        haven't having he her here hers herself him himself his how i if in into is isn't it it's
        its itself just let's may me might more most must mustn't my myself no nor not now of off
        on once only or other ought our ours ourselves out over own per same shall shan't she
        should shouldn't so some such than that that's the their theirs them themselves then there
        there's these they this those through thus to too under until up upon us very via was
        wasn't we were weren't what when where which while who whom whose why will with within
        without won't would wouldn't yes yet you your yours yourself yourselves""",
    "de": """aber alle allem allen aller alles als also am an ander andere anderen auch auf aus bei
        bin bis bist da damit dann das dass dein deine dem den denn der des dich die dies diese
        diesem diesen dieser dieses dir doch dort du durch ein eine einem einen einer eines er es
        etwas euch euer für gegen hat hatte hier hin ich ihm ihn ihnen ihr ihre im in ist jede
        jedem jeden jeder jedes jetzt kann kein keine man mein meine mich mir mit muss nach nicht
        nichts noch nun nur ob oder ohne sehr sein seine sich sie sind so soll über um und uns
        unser unter vom von vor war waren was weil welche wenn wer werden wie wieder wir wird wo
        zu zum zur""",
    "fr": """au aux avec ce ces cet cette dans de des du elle elles en est et être eu il ils je la
        le les leur leurs lui ma mais me même mes moi mon ne nos notre nous on ont ou où par pas
        pour qu que qui sa sans se ses son sont sur ta te tes toi ton tu un une vos votre vous
        été était sont très aussi comme fait plus tout tous toute toutes""",
    "es": """al algo como con contra cual cuando de del desde donde el ella ellas ellos en entre
        era es esa ese eso esta este esto estos fue ha hay la las le les lo los más me mi mis muy
        no nos o para pero por que se sea ser si sin sobre su sus también te tu un una uno unos y
        ya""",
    "it": """al alla alle anche che chi con cui da dal dalla degli dei del della delle di e gli ha
        il in la le lo ma mi ne nei nel nella non per più se si sono su sua sue suo tra un una
        uno""",
    "pt": """ao aos as com como da das de do dos e ela ele em entre era essa esse esta este foi há
        isso mais mas na nas no nos não o os ou para pela pelo por que se sem ser seu sua são
        também um uma""",
    "nl": """aan al alle als bij dan dat de der deze die dit door een en er had heb heeft het hij
        hoe ik in is je kan maar me met mij na naar niet nog nu of om ons ook op over te tot uit
        van voor was wat we wel wie wij zal ze zich zij zijn zo""",
}
STOPWORDS: frozenset[str] = frozenset(
    word for words in _STOPWORDS_TEXT.values() for word in words.split()
)


def words(text: str) -> list[str]:
    return _WORD.findall(text)


# A whitespace-separated token counts as a word when it has a letter or digit in it: regex
# [^\W_] is exactly str.isalnum() and \S exactly "not str.isspace()" (what str.split() splits
# on), so each match of this is one such token, from its first letter or digit to its end.
_ALNUM_TOKEN = re.compile(r"[^\W_]\S*")


def word_count(text: str) -> int:
    """Whitespace-separated tokens with a letter or digit in them ("$1,234.56" is one word)."""
    return len(_ALNUM_TOKEN.findall(text))


# Each word seen by keywords(), and what it counts as there: the word in lowercase, or "" when
# it is not a keyword (a stopword, a number, too short). Words repeat a lot, so this saves most
# of the per-word work; bounded: emptied when full.
_KEYWORD_OF: dict[str, str] = {}
_KEYWORD_CACHE_MAX = 50_000


def _keyword_of(word: str) -> str:
    w = word.casefold().replace("’", "'")
    if len(w) >= 3 and not w.isdigit() and any(c.isalpha() for c in w) and w not in STOPWORDS:
        return w
    return ""


def _cached_keyword_of(word: str) -> str:
    form = _KEYWORD_OF.get(word)
    if form is None:
        form = _KEYWORD_OF[word] = _keyword_of(word)
    return form


def keywords(text: str, limit: int = MAX_KEYWORDS) -> list[str]:
    """The most frequent content words, lowercase; ties broken alphabetically."""
    found = words(text)
    counts: Counter[str | None] = Counter(map(_KEYWORD_OF.get, found))
    if None in counts:  # some words not seen before
        if len(_KEYWORD_OF) > _KEYWORD_CACHE_MAX:
            _KEYWORD_OF.clear()
        counts = Counter(map(_cached_keyword_of, found))
    ranked = sorted(
        ((word, n) for word, n in counts.items() if word), key=lambda item: (-item[1], item[0])
    )
    return [word for word, _ in ranked[:limit]]


# --- entities ----------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}(?![\w-])"
)
_URL = re.compile(r"(?<![\w@])(?:https?://|www\.)[^\s<>\"'`{}|\\^\[\]]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?\"'"

_MONTHS_EN = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    r"Jan\.?|Feb\.?|Mar\.?|Apr\.?|Jun\.?|Jul\.?|Aug\.?|Sept?\.?|Oct\.?|Nov\.?|Dec\.?"
)
_MONTHS_OTHER = (
    "Januar|Februar|März|Maerz|Juni|Juli|Oktober|Dezember|"
    "janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|"
    "novembre|décembre|decembre"
)
_MONTH = rf"(?:{_MONTHS_EN}|{_MONTHS_OTHER})"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])"
_ORD = r"(?:st|nd|rd|th)?"
_YEAR = r"(?:1[6-9]|2\d)\d{2}"
_DATE_PATTERNS = [
    # 2024-01-31
    rf"(?<![\d-]){_YEAR}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])(?![\d-])",
    # 31/01/2024, 01/31/2024, 01.02.2024, 31-01-2024 (day and month order both accepted)
    rf"(?<![\d/.-])(?:{_DAY}|1[0-2])(?P<sep>[/.-]){_DAY}(?P=sep){_YEAR}(?![\d/-]|\.\d)",
    # January 31, 2024 / Jan. 31st 2024
    rf"\b{_MONTH}\s+{_DAY}{_ORD},?\s+{_YEAR}\b",
    # 31 January 2024 / 31st of January, 2024 / 31. Januar 2024
    rf"(?<!\d){_DAY}(?:{_ORD}|\.)\s+(?:of\s+)?{_MONTH},?\s+{_YEAR}\b",
    # January 2024 / Jan 2024
    rf"\b{_MONTH}\s+{_YEAR}\b",
]
_DATE = re.compile("|".join(f"(?:{p})" for p in _DATE_PATTERNS), re.IGNORECASE)

_CURRENCY_CODES = "USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|INR|SEK|NOK|DKK|PLN|CZK|RUB|BRL|MXN|NZD|HKD|SGD"
_SYMBOL = r"(?:US\$|A\$|C\$|[$€£¥₹])"
# 1,234.56 / 1.234,56 / 1 234,56 (non-breaking or thin space) / 1234 / 12.50
_AMOUNT = r"\d{1,3}(?:[,.\u00a0\u202f]\d{3})+(?:[.,]\d{1,2})?|\d+(?:[.,]\d{1,2})?"
_SCALE = r"(?:\s?(?:k|m|bn|million|billion|thousand|Mio\.?|Mrd\.?))?"
_MONEY_WORDS = r"dollars?|euros?|pounds?(?:\s+sterling)?|cents?|yen|francs?"
_MONEY_PATTERNS = [
    rf"{_SYMBOL}\s?(?:{_AMOUNT}){_SCALE}(?![\w])",
    rf"\b(?:{_CURRENCY_CODES})\s?(?:{_AMOUNT}){_SCALE}(?![\w])",
    rf"(?<![\w.,])(?:{_AMOUNT}){_SCALE}\s?(?:{_SYMBOL}|\b(?:{_CURRENCY_CODES}|{_MONEY_WORDS})\b)",
]
_MONEY = re.compile("|".join(f"(?:{p})" for p in _MONEY_PATTERNS), re.IGNORECASE)

# Earlier in this list wins when two candidates start at the same place with the same length.
KIND_ORDER = ("email", "url", "date", "money", "phone")


def _emails(text: str) -> Iterator[tuple[int, int]]:
    if "@" not in text:
        return
    for m in _EMAIL.finditer(text):
        yield m.start(), m.end()


def _urls(text: str) -> Iterator[tuple[int, int]]:
    # Every URL has "://" or "www." in it, in any case (under re.IGNORECASE only "w" and "W"
    # match "w"): two substring tests are far quicker than the search.
    if "://" not in text and "www." not in text.lower():
        return
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


def _word_start(words: Iterable[str], *, lookahead: bool = False) -> str:
    """Regex for one of `words` at a word boundary, case-insensitively (as in the patterns it
    stands in for). Built to be searched for quickly: a class of the first letters comes first
    (regex passes over most places with that one test), then the words grouped by first letter."""
    by_first: dict[str, list[str]] = {}
    for word in words:
        by_first.setdefault(re.escape(word[0]), []).append(re.escape(word[1:]))
    trie = "|".join(f"{first}(?:{'|'.join(rest)})" for first, rest in by_first.items())
    body = f"(?={trie})" if lookahead else f"(?:{trie})"
    return rf"(?i:(?=[{''.join(by_first)}])\b{body})"


def _scan(
    pattern: re.Pattern[str], starts: re.Pattern[str], text: str
) -> Iterator[tuple[int, int]]:
    """The spans of pattern.finditer(text), trying pattern only where `starts` matches: that
    must be at every place where a match of pattern can begin. The same matches: finditer takes
    the first place at or after the end of the previous match where pattern matches, and
    pattern.match(text, pos) sees the text before pos for its lookbehinds and word boundaries."""
    end = 0
    match = pattern.match
    for start in starts.finditer(text):
        pos = start.start()
        if pos >= end and (m := match(text, pos)) is not None:
            end = m.end()
            yield pos, end


# Every date pattern has a year in it: text without one is not scanned.
_YEAR_ONLY = re.compile(_YEAR)
# Where a date can begin: an ASCII digit that does not follow a digit (the day, or the year of
# 2024-01-31), or a month name at a word boundary (each begins with one of these stems).
_MONTH_STEMS = (
    *("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    *("mär", "mae", "okt", "dez", "fév", "fev", "avr", "mai", "jui", "aoû", "aou", "déc"),
)
_DATE_START = re.compile(rf"(?<!\d)(?=[0-9])|{_word_start(_MONTH_STEMS, lookahead=True)}")


def _dates(text: str) -> Iterator[tuple[int, int]]:
    if _YEAR_ONLY.search(text) is None:
        return
    yield from _scan(_DATE, _DATE_START, text)


# What every amount has in it, besides a digit: a currency code or money word after a word
# boundary, or a currency symbol ("US$" ends with "$") right before the amount ("$5", "€ 5") or
# right after it or its scale ("5$", "5 US$", "3k $", "1,5 Mio. €": amounts end with a digit,
# scales with one of k m n d o .). Same flags as _MONEY, so the same case-insensitivity.
_DIGIT = re.compile(r"\d")
_MONEY_WORD_STEMS = ("dollar", "euro", "pound", "cent", "yen", "franc")  # of _MONEY_WORDS
_MONEY_WORD = re.compile(_word_start((*_CURRENCY_CODES.split("|"), *_MONEY_WORD_STEMS)))
_CURRENCY_SYMBOL = re.compile(r"[$€£¥₹]")
_SYMBOL_BY_AMOUNT = re.compile(
    r"[$€£¥₹]\s?\d|(?:\d|k|m|n|d|o|\.)\s?(?:us|a|c)?[$€£¥₹]", re.IGNORECASE
)


def _money(text: str) -> Iterator[tuple[int, int]]:
    # Most text has no amount: quick searches spare the costly one.
    if _DIGIT.search(text) is None:
        return
    if (
        _CURRENCY_SYMBOL.search(text) is None or _SYMBOL_BY_AMOUNT.search(text) is None
    ) and _MONEY_WORD.search(text) is None:
        return
    for m in _MONEY.finditer(text):
        yield m.start(), m.end()


# No valid phone number has fewer digits than this, country code included (the shortest are
# +43/+49 with a 4-digit number: 6; tests/unit/test_analyzer_speed.py checks the metadata).
MIN_PHONE_DIGITS = 5


class _PhoneMatcher(phonenumbers.PhoneNumberMatcher):
    """The library's matcher, minus the costly parse-and-validate of candidates that have too
    few digits to be a phone number (page numbers, years, amounts: most candidates in prose).
    Inner matches are parts of the candidate, so they have even fewer digits."""

    def _extract_match(self, candidate: str, offset: int):  # type: ignore[no-untyped-def]
        if len(_DIGIT.findall(candidate)) < MIN_PHONE_DIGITS:
            return None
        return super()._extract_match(candidate, offset)

    def _parse_and_verify(self, candidate: str, offset: int):  # type: ignore[no-untyped-def]
        # The same for the pieces of a candidate tried one by one (_extract_inner_match: in a
        # row of a table of numbers, each number): those with too few digits cannot match.
        # Skipping them changes no count of tries: the caller counts each failed piece.
        if len(_DIGIT.findall(candidate)) < MIN_PHONE_DIGITS:
            return None
        return super()._parse_and_verify(candidate, offset)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    # Numbers written with +CC parse under their own country, whatever the default region.
    if len(_DIGIT.findall(text)) < MIN_PHONE_DIGITS:
        return
    for m in _PhoneMatcher(text, PHONE_REGION):
        yield m.start, m.end


_FINDERS: dict[str, Callable[[str], Iterator[tuple[int, int]]]] = {
    "email": _emails,
    "url": _urls,
    "date": _dates,
    "money": _money,
    "phone": _phones,
}


def find_entities(text: str) -> list[Entity]:
    """All entities, sorted by start, never overlapping: the earliest-starting, then longest,
    then first kind in KIND_ORDER wins (so a URL keeps its embedded e-mail-like part, and a
    date or amount is not also taken for a phone number)."""
    candidates = [
        (start, -(end - start), KIND_ORDER.index(kind), kind, end)
        for kind in KIND_ORDER
        for start, end in _FINDERS[kind](text)
        if end > start
    ]
    entities: list[Entity] = []
    taken_until = 0
    for start, _neg_len, _rank, kind, end in sorted(candidates):
        if start < taken_until:
            continue
        entities.append(Entity(kind=kind, text=text[start:end], start=start, end=end))  # type: ignore[arg-type]
        taken_until = end
    return entities


# --- the analysis ------------------------------------------------------------------------


def _without(text: str, entities: list[Entity]) -> str:
    """The text with each entity blanked out (offsets elsewhere are kept)."""
    parts: list[str] = []
    pos = 0
    for entity in entities:
        parts += [text[pos : entity.start], " " * (entity.end - entity.start)]
        pos = entity.end
    parts.append(text[pos:])
    return "".join(parts)


def analyze_text(text: str) -> Analysis:
    entities = find_entities(text)
    # Addresses, dates and amounts are reported as entities; as words they would only crowd
    # out the keywords and blur the language guess.
    prose = _without(text, entities)
    return Analysis(
        analyzer=ANALYZER_ID,
        language=detect_language(prose),
        word_count=word_count(text),
        keywords=keywords(prose),
        entities=entities,
        cost_usd=0.0,
    )


class BuiltinAnalyzer:
    """The ChunkAnalyzer that needs no network and costs nothing."""

    name = "builtin"

    def __init__(self) -> None:
        load_identifier()  # the language model loads now, not on the first chunk

    async def analyze(self, text: str) -> Analysis:
        # A chunk is bounded (chunk_max_chars): this runs inline on the event loop.
        return analyze_text(text)
