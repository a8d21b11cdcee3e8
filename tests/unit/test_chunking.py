from __future__ import annotations

import uuid

import pytest

from shared.chunking import chunk_spans, make_chunks
from shared.events import PageSource


class TestChunkSpans:
    def test_short_text_is_one_chunk(self) -> None:
        assert chunk_spans("  Hello there.  ", 100) == [(2, 14)]

    def test_empty_text_has_no_chunks(self) -> None:
        assert chunk_spans("", 100) == [] and chunk_spans(" \n\n ", 100) == []

    def test_paragraphs_are_packed_up_to_the_limit(self) -> None:
        text = "One two.\n\nThree four.\n\nFive six."
        spans = chunk_spans(text, 22)
        assert [text[a:b] for a, b in spans] == ["One two.\n\nThree four.", "Five six."]

    def test_long_paragraph_is_cut_at_sentences(self) -> None:
        text = "First sentence here. Second sentence here. Third one."
        pieces = [text[a:b] for a, b in chunk_spans(text, 25)]
        assert pieces == ["First sentence here.", "Second sentence here.", "Third one."]

    def test_unbroken_run_is_cut_hard(self) -> None:
        text = "x" * 95
        spans = chunk_spans(text, 40)
        assert [b - a for a, b in spans] == [40, 40, 15]

    @pytest.mark.parametrize("limit", [7, 20, 80, 500])
    def test_bounds_and_coverage(self, limit: int) -> None:
        text = ("Lorem ipsum dolor sit amet. Consectetur adipiscing elit!\n\n" * 12) + "tail"
        spans = chunk_spans(text, limit)
        assert all(0 < b - a <= limit for a, b in spans)
        assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
        covered = "".join(text[a:b] for a, b in spans)
        assert covered.replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")

    def test_rejects_non_positive_limit(self) -> None:
        with pytest.raises(ValueError):
            chunk_spans("abc", 0)


def test_make_chunks_offsets_index_the_page_text() -> None:
    job = uuid.uuid4()
    text = "Alpha beta.\n\nGamma delta epsilon.\n\nZeta."
    chunks = make_chunks(job, 2, PageSource.TEXT_LAYER, text, 15)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.page == 2
    again = make_chunks(job, 2, PageSource.TEXT_LAYER, text, 15)
    assert [c.chunk_id for c in again] == [c.chunk_id for c in chunks]
