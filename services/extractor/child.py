"""The extraction child: reads an ExtractSpec (JSON) on stdin and writes JSON lines on stdout.

Only protocol records ever reach stdout: the real stdout is kept private and fd 1 is pointed
at stderr, so whatever a library prints (Python or C) cannot corrupt the stream.
Run as `python -m services.extractor.child` inside shared.sandbox.run_sandboxed. With
`--preload` (a warm child of a shared.sandbox.WarmPool) the format libraries are imported
before the spec is read, so that cost is paid while the child waits for its job.

Started by a pool that reuses its children (shared.sandbox.serving_jobs()), the child extracts
one document after another (shared.sandbox.serve_jobs: each spec's CPU limit is re-armed as it
arrives, and each ends saying whether the child may take another).
It may not after a fatal record (whatever went wrong may have left state behind), after
lowering its own priority (cannot be undone) or once it holds much memory; it then exits.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Generator, Iterable
from typing import IO

from services.extractor.spec import (
    ChildRecord,
    ExtractionFatal,
    ExtractSpec,
    FormatRecord,
    fatal_record,
)
from shared.sandbox import (
    apply_job_cpu_limit,
    limit_reason,
    private_stdout,
    serve_jobs,
    serving_jobs,
)

# How far a large document's child steps back for the CPU (see ExtractSpec.nice_above_pages).
LARGE_DOCUMENT_NICENESS = 10


# A reused child holding more than this after a document (a large document's heap is not all
# given back) exits instead of taking the next one: that memory would count against the
# next job and against the service's memory budget (300 MB, children included). A freshly
# preloaded child holds ~45 MB, one after dozens of ordinary documents ~75 MB.
REUSE_MAX_RSS_MB = 120


def run(spec: ExtractSpec, records: Iterable[FormatRecord], out: IO[str]) -> int:
    """Stream records, enforcing the document-wide limits; returns the exit status."""
    run_job(spec, records, out)
    return 0


def check_pages(spec: ExtractSpec, pages_total: int) -> None:
    if pages_total > spec.max_pages:
        raise ExtractionFatal(
            f"The document has {pages_total} pages, more than the limit of {spec.max_pages}."
        )


def check_total_chars(spec: ExtractSpec, total_chars: int) -> None:
    if total_chars > spec.max_extracted_chars:
        raise ExtractionFatal(
            f"The document has more text than the limit of {spec.max_extracted_chars} characters."
        )


def run_job(spec: ExtractSpec, records: Iterable[FormatRecord], out: IO[str]) -> bool:
    """Stream records, enforcing the document-wide limits. Returns whether this process may
    extract another document: not after a fatal record, nor after it lowered its priority."""

    def emit(record: ChildRecord) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    total_chars = 0
    reusable = True
    try:
        for record in records:
            if record["type"] == "meta":
                check_pages(spec, record["pages_total"])
                if 0 < spec.nice_above_pages < record["pages_total"]:
                    os.nice(LARGE_DOCUMENT_NICENESS)
                    reusable = False
            else:
                total_chars += len(record["text"])
                check_total_chars(spec, total_chars)
            emit(record)
    except Exception as exc:
        emit(fatal_record(fatal_reason(exc)))
        return False
    return reusable


def fatal_reason(exc: Exception) -> str:
    """The sentence for what stopped the extraction of a document."""
    if isinstance(exc, ExtractionFatal):
        return exc.reason
    if isinstance(exc, MemoryError):
        return "The document needs more memory to process than is allowed."
    if isinstance(exc, RecursionError):
        return "The document's structure is too deeply nested to read."
    if isinstance(exc, OSError) and (reason := limit_reason(exc)) is not None:
        return reason
    # Unexpected: still a sentence, with the detail in stderr.
    logging.getLogger("extractor.child").error("extraction failed", exc_info=exc)
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    return f"The document could not be read: {detail}."


def preload() -> None:
    """Import what extracting a document needs (most documents are PDFs)."""
    import pypdfium2  # noqa: F401

    import services.extractor.formats.docx
    import services.extractor.formats.html
    import services.extractor.formats.image
    import services.extractor.formats.pdf  # noqa: F401


def extract_records(spec: ExtractSpec) -> Generator[FormatRecord, None, None]:
    from services.extractor.formats import extract

    yield from extract(spec)


def serve(out: IO[str]) -> int:
    """Extract documents one after another until stdin ends (or this process must not go on)."""

    def extract_one(payload: bytes) -> bool:
        spec = ExtractSpec.from_json(payload)
        # Each document's stderr shows its warnings, even those an earlier one showed (the
        # "default" action prints a warning once per place; a new filter list forgets them).
        warnings.simplefilter("default")
        records = extract_records(spec)
        try:
            return run_job(spec, records, out)
        finally:
            records.close()  # now, not at garbage collection: the document's files are closed

    return serve_jobs(out, extract_one, max_rss_mb=REUSE_MAX_RSS_MB)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = private_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    if "--preload" in args:
        preload()
    try:
        if serving_jobs():
            return serve(out)
        raw = sys.stdin.buffer.read()
        if not raw.strip():
            return 0  # a warm child whose service went away: nothing to do
        spec = ExtractSpec.from_json(raw)
        # The job is here: from now on the child gets the full CPU-time allowance for it.
        apply_job_cpu_limit()
        return run(spec, extract_records(spec), out)
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
