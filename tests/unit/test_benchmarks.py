"""The benchmark harness without a stack: a missing corpus ends the run at once with the
sentence that says where the corpus goes, and the pure parts (the long PDF, the push score)
do what they say."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from benchmarks import run, text_throughput
from benchmarks.common import CorpusMissing
from benchmarks.synthetic import score_push
from tests.fixtures import pdf_with_pages


@pytest.fixture
def no_corpus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    missing = tmp_path / "nonexistent"
    monkeypatch.setenv("DOCPIPE_CORPUS", str(missing))
    return missing


def test_a_missing_corpus_ends_the_run_before_any_stack_starts(
    no_corpus: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def no_stack(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a stack was started without a corpus")

    monkeypatch.setattr(run, "bench_stack", no_stack)
    started = time.monotonic()
    status = run.main(["--out", str(tmp_path / "out")])
    assert time.monotonic() - started < 5
    assert status == 2
    said = capsys.readouterr().err
    assert "DOCPIPE_CORPUS" in said and str(no_corpus) in said
    assert "pdf_text/" in said and "pdf_scanned/" in said
    assert "--only push,bus" in said
    assert not (tmp_path / "out").exists()


def test_only_the_corpus_free_benchmarks_run_without_a_corpus(no_corpus: Path) -> None:
    assert run.missing_corpus(["push", "bus"]) is None
    said = run.missing_corpus(["push", "small_jobs"])
    assert said is not None and "small_jobs" in said and "push" not in said.split(":")[0]


def test_a_corpus_with_its_folders_is_enough(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("pdf_text", "pdf_scanned"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("DOCPIPE_CORPUS", str(tmp_path))
    assert run.missing_corpus(list(run.BENCHMARKS)) is not None  # folders without documents
    pdf_with_pages(tmp_path / "pdf_text" / "one.pdf", ["One page."])
    (tmp_path / "pdf_scanned" / "scan.png").write_bytes(b"")
    assert run.missing_corpus(list(run.BENCHMARKS)) is None


@pytest.mark.timeout(20)
def test_the_long_pdf_without_a_readable_source_page_stops_at_once(tmp_path: Path) -> None:
    """It used to cycle forever over no pages (100% CPU, a bench that never ended)."""
    not_a_pdf = tmp_path / "broken.pdf"
    not_a_pdf.write_text("not a PDF")
    for sources in ([], [not_a_pdf], [tmp_path / "absent.pdf"]):
        with pytest.raises(CorpusMissing, match="DOCPIPE_CORPUS"):
            text_throughput.build_long_pdf(tmp_path / "long.pdf", 20, sources)


@pytest.mark.timeout(20)
def test_the_text_inputs_without_a_corpus_say_where_it_goes(
    no_corpus: Path, tmp_path: Path
) -> None:
    with pytest.raises(CorpusMissing, match="DOCPIPE_CORPUS") as caught:
        text_throughput.inputs(tmp_path, smoke=True)
    assert str(no_corpus / "pdf_text") in str(caught.value)


def test_the_long_pdf_cycles_through_its_sources(tmp_path: Path) -> None:
    first = pdf_with_pages(tmp_path / "a.pdf", ["Alpha one.", "Alpha two."])
    second = pdf_with_pages(tmp_path / "b.pdf", ["Bravo one."])
    long_pdf = text_throughput.build_long_pdf(tmp_path / "long.pdf", 5, [first, second])
    texts = [page.extract_text().strip() for page in PdfReader(long_pdf).pages]
    assert texts == ["Alpha one.", "Alpha two.", "Bravo one.", "Alpha one.", "Alpha two."]


def test_the_push_score_matches_updates_to_publish_times() -> None:
    job, late_job = uuid.uuid4(), uuid.uuid4()
    sent = {job: [10.0, 10.1], late_job: [10.0, 10.1]}
    seen = [
        # (receive time, seq, extract done, final)
        (str(job), [(10.02, 1, 1, False), (10.13, 2, 2, True)]),
        # Missed seq 3 and never saw the final snapshot; done went backwards.
        (str(late_job), [(10.5, 1, 2, False), (10.6, 2, 1, False), (10.7, 4, 2, False)]),
    ]
    score = score_push(seen, sent, pages=2, start=10.0)
    assert score.latencies[:2] == pytest.approx([0.02, 0.03])
    assert score.latencies[2:] == pytest.approx([0.5, 0.4])
    assert score.disorder == 1
    assert score.lost == 2
    assert max(score.worst)[1] == pytest.approx(0.0)
