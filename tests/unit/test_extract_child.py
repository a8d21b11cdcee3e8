"""The child's JSON-lines protocol, run the way the service runs it: through run_sandboxed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.extractor.service import CHILD_ARGV, detect_format
from services.extractor.spec import ExtractSpec
from shared.errors import PermanentError
from shared.sandbox import (
    END_OF_JOB,
    END_OF_LAST_JOB,
    REUSE_ENV,
    STDERR_END_OF_JOB,
    run_sandboxed,
)
from tests.unit.extractor_fixtures import docx_file, text_pdf


async def run_child(spec: ExtractSpec, timeout: float = 60) -> tuple[list[dict[str, Any]], Any]:
    lines: list[dict[str, Any]] = []

    async def on_line(line: bytes) -> None:
        lines.append(json.loads(line))  # anything but JSON on stdout fails the test

    result = await run_sandboxed(
        CHILD_ARGV,
        job_id=None,
        timeout=timeout,
        cpu_seconds=60,
        memory_mb=1536,
        stdin=spec.to_json(),
        on_line=on_line,
    )
    return lines, result


def spec_for(path: Path, fmt: str, tmp_path: Path, **kw: Any) -> ExtractSpec:
    return ExtractSpec(path=str(path), format=fmt, blob_dir=str(tmp_path / "blobs"), **kw)


async def test_child_streams_meta_then_pages(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["first page words here", "second page words here"])
    lines, result = await run_child(spec_for(pdf, "pdf", tmp_path))
    assert result.failure is None and result.returncode == 0
    assert [r["type"] for r in lines] == ["meta", "page", "page"]
    assert lines[0]["pages_total"] == 2
    assert lines[2]["text"] == "second page words here"
    assert set(lines[1]) == {"type", "page", "text", "has_text_layer", "images", "error"}


async def test_child_reports_limits_as_fatal(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["one " * 20, "two " * 20, "three " * 20])
    lines, _ = await run_child(spec_for(pdf, "pdf", tmp_path, max_pages=2))
    assert lines == [{"type": "fatal", "reason": "The PDF has 3 pages, more than the limit of 2."}]
    # Cumulative text limit: the first page fits, the second does not.
    lines, _ = await run_child(spec_for(pdf, "pdf", tmp_path, max_extracted_chars=100))
    assert [r["type"] for r in lines] == ["meta", "page", "fatal"]
    assert lines[-1]["reason"] == "The document has more text than the limit of 100 characters."
    lines, _ = await run_child(
        spec_for(docx_file(tmp_path / "d.docx"), "docx", tmp_path, max_extracted_chars=10)
    )
    assert lines[-1]["type"] == "fatal"


async def test_child_fatal_for_garbage_and_missing_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    lines, result = await run_child(spec_for(junk, "pdf", tmp_path))
    assert result.failure is None
    assert lines[-1]["type"] == "fatal"
    assert lines[-1]["reason"].startswith("The PDF is damaged and could not be read")
    lines, _ = await run_child(spec_for(tmp_path / "gone.pdf", "pdf", tmp_path))
    assert lines[-1]["type"] == "fatal"


async def test_sandbox_timeout_stops_a_slow_child(tmp_path: Path) -> None:
    # A 60-page PDF cannot be extracted in 50 ms: the wall clock is the last resort.
    pdf = text_pdf(tmp_path / "t.pdf", [f"page {i} " * 50 for i in range(60)])
    _, result = await run_child(spec_for(pdf, "pdf", tmp_path), timeout=0.05)
    assert result.failure is not None and "time limit" in result.failure


def test_detect_format_reasons(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    with pytest.raises(PermanentError, match="empty"):
        detect_format(empty)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(PermanentError, match="PDF, DOCX, XLSX, PPTX, ODT, ODS, ODP, EPUB, EML"):
        detect_format(binary)
    ole = tmp_path / "old.doc"
    ole.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600))
    with pytest.raises(PermanentError, match="encrypted Office file"):
        detect_format(ole)


_RENICE_PROBE = """
import io, os, sys
from services.extractor.child import run
from services.extractor.spec import ExtractSpec
spec = ExtractSpec(path="x", format="pdf", blob_dir=sys.argv[1], nice_above_pages=2)
run(spec, [{"type": "meta", "format": "pdf", "pages_total": int(sys.argv[2])}], io.StringIO())
print(os.nice(0))
"""


@pytest.mark.parametrize(("pages", "raised_by"), [(3, 10), (2, 0)])
def test_a_long_document_lowers_its_own_cpu_priority(
    tmp_path: Path, pages: int, raised_by: int
) -> None:
    """Big documents yield the CPU to small ones. Renicing cannot be undone by an
    unprivileged process, so each case runs in a process of its own."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _RENICE_PROBE, str(tmp_path), str(pages)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout.strip().splitlines()[-1]) == os.nice(0) + raised_by


def serve_jobs(specs: list[ExtractSpec]) -> tuple[list[bytes], bytes]:
    """A reused child (shared.sandbox's job protocol) given these jobs, then EOF."""
    import os
    import subprocess
    import sys

    frames = b"".join(b"%d 60\n" % len(raw) + raw for raw in (s.to_json() for s in specs))
    out = subprocess.run(
        [sys.executable, "-m", "services.extractor.child", "--preload"],
        input=frames,
        capture_output=True,
        env={**os.environ, REUSE_ENV: "1"},
        timeout=120,
        check=True,
    )
    return out.stdout.splitlines(keepends=True), out.stderr


def kinds(lines: list[bytes]) -> list[str]:
    return [
        "done" if line == END_OF_JOB else "last" if line == END_OF_LAST_JOB else
        json.loads(line)["type"]
        for line in lines
    ]  # fmt: skip


def test_a_reused_child_serves_framed_jobs_until_stdin_ends(tmp_path: Path) -> None:
    one = text_pdf(tmp_path / "one.pdf", ["first document words"])
    two = text_pdf(tmp_path / "two.pdf", ["second document page", "second document again"])
    lines, stderr = serve_jobs([spec_for(one, "pdf", tmp_path), spec_for(two, "pdf", tmp_path)])
    assert kinds(lines) == ["meta", "page", "done", "meta", "page", "page", "done"]
    assert json.loads(lines[4])["text"] == "second document page"
    assert stderr.count(STDERR_END_OF_JOB) == 2


def test_a_reused_child_stops_after_a_fatal_record_or_renicing(tmp_path: Path) -> None:
    pdf = text_pdf(tmp_path / "t.pdf", ["one " * 20, "two " * 20])
    fine = spec_for(pdf, "pdf", tmp_path)
    lines, _ = serve_jobs([spec_for(pdf, "pdf", tmp_path, max_pages=1), fine])
    assert kinds(lines) == ["fatal", "last"]  # the second job is left for another child
    lines, _ = serve_jobs([spec_for(pdf, "pdf", tmp_path, nice_above_pages=1), fine])
    assert kinds(lines) == ["meta", "page", "page", "last"]


def test_a_failed_child_is_sorted_by_its_outcome_not_its_sentence() -> None:
    from services.extractor.service import raise_failure
    from shared.errors import JobGone, PermanentError
    from shared.sandbox import SandboxOutcome, SandboxResult

    raise_failure(SandboxResult(0, "", None, SandboxOutcome.OK))
    with pytest.raises(JobGone):
        raise_failure(SandboxResult(0, "", "Stopped for the owner.", SandboxOutcome.CANCELLED))
    # A sentence that mentions cancelling is not a cancel.
    with pytest.raises(PermanentError) as failed:
        raise_failure(
            SandboxResult(3, "", "The scan was cancelled by its author.", SandboxOutcome.FAILED)
        )
    assert failed.value.reason == "The scan was cancelled by its author."
    for outcome in (SandboxOutcome.TIMEOUT, SandboxOutcome.KILLED):
        with pytest.raises(PermanentError):
            raise_failure(SandboxResult(-9, "", "Stopped.", outcome))
