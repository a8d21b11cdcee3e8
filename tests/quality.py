"""Text-quality measures used by the corpus tests and the benchmarks."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from rapidfuzz.distance import Levenshtein

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(unicodedata.normalize("NFKC", text))]


def word_recall(expected: str, got: str) -> float:
    """Share of the reference's words (as a multiset) found in the output; order-insensitive,
    because several references are in layout mode."""
    want = Counter(words(expected))
    if not want:
        return 1.0
    have = Counter(words(got))
    hit = sum(min(n, have[w]) for w, n in want.items())
    return hit / sum(want.values())


def _normalise_for_cer(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def levenshtein(a: str, b: str) -> int:
    return int(Levenshtein.distance(a, b))


def cer(expected: str, got: str) -> float:
    """Character error rate: edit distance over the reference length, whitespace collapsed."""
    ref = _normalise_for_cer(expected)
    hyp = _normalise_for_cer(got)
    if not ref:
        return 0.0 if not hyp else 1.0
    return levenshtein(ref, hyp) / len(ref)
