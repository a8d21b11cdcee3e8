"""Which language a chunk is in: py3langid's model and scores, computed faster.

The identifier is py3langid's with two changes that keep every score the same
(tests/unit/test_analyzer_shortcuts.py compares them with the library's own):
- its feature table is held as float32 rather than float16, so numpy does not convert the
  rows on every call before the same float32 product;
- the walk of its byte automaton runs in numpy (`_visit_counts`) rather than byte by byte in
  Python.
What each change measured: docs/decisions/0403-analyzer-language-identifier.md.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Any

MIN_LANGUAGE_WORDS = 3
MIN_LANGUAGE_CONFIDENCE = 0.5

# Beyond this the numpy walk would be slower than the library's (the model has 6).
_MAX_AUTOMATON_DEPTH = 16

# A word as services.analyzer.builtin.words sees it.
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_DIGITS = re.compile(r"\d+")


def _fast_identifier_class() -> Any:
    """The LanguageIdentifier subclass (made here: numpy and py3langid load on first use)."""
    import numpy as np
    from py3langid.langid import LanguageIdentifier, visit_counts

    class _FastIdentifier(LanguageIdentifier):  # type: ignore[misc]
        def __init__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            rows = np.asarray(self.tk_row, dtype=np.intp)
            self._moves = np.asarray(self.tk_nextmove)  # a view, not a copy
            self._row_starts = rows << 8  # = self._rowbase
            self._features = np.asarray(self.tk_output, dtype=np.intp)
            self._depth = _automaton_depth(self._moves.reshape(-1, 256), rows)

        def _visit_counts(self, data: bytes) -> Counter[int] | None:
            """= visit_counts(self.tk_nextmove, self._rowbase, self.tk_output, data): the
            features the automaton meets reading data, counted, in order of first appearance.

            It is an Aho-Corasick automaton: after each byte it is in the state of the longest
            suffix of what it has read that is the start of a feature, and that is never longer
            than its depth. So its state after data[i] is the one it reaches from the start
            state reading just the `depth` bytes up to data[i] (all of them, near the start):
            the states after every byte are computed together, in `depth` moves of them all."""
            if self._depth > _MAX_AUTOMATON_DEPTH:
                return visit_counts(self.tk_nextmove, self._rowbase, self.tk_output, data)  # type: ignore[no-any-return]
            n = len(data)
            read = np.frombuffer(data, dtype=np.uint8)
            states = np.zeros(n, dtype=np.intp)
            for back in range(min(self._depth, n) - 1, -1, -1):
                after = states[back:]  # the state for each byte i >= back reads byte i - back
                after[:] = self._moves[self._row_starts[after] + read[: n - back]]
            features = self._features[states]
            features = features[features >= 0]
            return Counter(features.tolist()) if features.size else None

        def _raw_score(self, text):  # type: ignore[no-untyped-def]
            visits = self._visit_counts(text)
            if visits is None:
                return super()._raw_score(text)  # no features: the library's fill value
            return self._sparse_score(visits, self.nb_ptc)

    return _FastIdentifier


@lru_cache(maxsize=1)
def _identifier() -> Any:
    """The identifier, loaded once:
    = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True), but for the table."""
    import numpy as np
    from py3langid.langid import MODEL_DIR, MODEL_FILE
    from py3langid.modelio import load_model

    ptc, pc, classes, nextmove, row, output = load_model(MODEL_DIR / MODEL_FILE)
    return _fast_identifier_class()(
        np.asarray(ptc, dtype=np.float32),
        np.asarray(pc),
        classes,
        nextmove,
        output,
        norm_probs=True,
        tk_row=row,
    )


def load_identifier() -> None:
    """Load the language model now rather than on the first chunk."""
    _identifier()


def _automaton_depth(moves_by_row: Any, rows: Any) -> int:
    """The length of the longest path needed to reach a state from the start state (so, for
    an Aho-Corasick automaton, of the longest feature): breadth-first, by rows of moves (the
    states that share a row share their moves)."""
    import numpy as np

    reached = np.zeros(len(rows), dtype=bool)
    reached[0] = True
    expanded = np.zeros(len(moves_by_row), dtype=bool)
    frontier = np.zeros(1, dtype=np.intp)
    depth = 0
    while True:
        new_rows = np.unique(rows[frontier])
        new_rows = new_rows[~expanded[new_rows]]
        expanded[new_rows] = True
        targets = moves_by_row[new_rows].ravel()
        frontier = np.unique(targets[~reached[targets]])
        if not frontier.size:
            return depth
        reached[frontier] = True
        depth += 1


def _has_language_words(text: str) -> bool:
    """At least MIN_LANGUAGE_WORDS words with a letter in them."""
    n = 0
    for m in _WORD.finditer(text):
        word = m.group()
        if word.isalpha() or any(c.isalpha() for c in word):
            n += 1
            if n >= MIN_LANGUAGE_WORDS:
                return True
    return False


def detect_language(text: str) -> str | None:
    """ISO 639-1 code, or None for too little text or an unsure guess.

    Digits are taken out first: they say nothing about the language and lower the confidence.
    """
    text = _DIGITS.sub(" ", text)
    if not _has_language_words(text):
        return None
    lang, confidence = _identifier().classify(text)
    if confidence < MIN_LANGUAGE_CONFIDENCE or len(lang) != 2:
        return None  # unsure, or a code with no ISO 639-1 form ('zxx', 'und', ...)
    return str(lang)
