"""The extraction child: reads an ExtractSpec (JSON) on stdin and writes JSON lines on stdout.

Only protocol records ever reach stdout: the real stdout is kept private and fd 1 is pointed
at stderr, so whatever a library prints (Python or C) cannot corrupt the stream.
Run as `python -m services.extractor.child` inside shared.sandbox.run_sandboxed. With
`--preload` (a warm child of a shared.sandbox.WarmPool) the format libraries are imported
before the spec is read, so that cost is paid while the child waits for its job.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import IO, Any

from services.extractor.spec import ExtractionFatal, ExtractSpec, fatal_record
from shared.sandbox import apply_job_cpu_limit


def private_stdout() -> IO[str]:
    """Keep the protocol stream to ourselves; everything else printed goes to stderr."""
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", errors="replace", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


# How far a large document's child steps back for the CPU (see ExtractSpec.nice_above_pages).
LARGE_DOCUMENT_NICENESS = 10


def run(spec: ExtractSpec, records: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """Stream records, enforcing the document-wide limits; returns the exit status."""

    def emit(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    total_chars = 0
    try:
        for record in records:
            if record["type"] == "meta":
                if record["pages_total"] > spec.max_pages:
                    raise ExtractionFatal(
                        f"The document has {record['pages_total']} pages, "
                        f"more than the limit of {spec.max_pages}."
                    )
                if 0 < spec.nice_above_pages < record["pages_total"]:
                    os.nice(LARGE_DOCUMENT_NICENESS)
            if record["type"] == "page":
                total_chars += len(record["text"])
                if total_chars > spec.max_extracted_chars:
                    raise ExtractionFatal(
                        "The document has more text than the limit of "
                        f"{spec.max_extracted_chars} characters."
                    )
            emit(record)
    except ExtractionFatal as exc:
        emit(fatal_record(exc.reason))
    except MemoryError:
        emit(fatal_record("The document needs more memory to process than is allowed."))
    except RecursionError:
        emit(fatal_record("The document's structure is too deeply nested to read."))
    except Exception as exc:  # unexpected: still a sentence, with the detail in stderr
        logging.getLogger("extractor.child").exception("extraction failed")
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        emit(fatal_record(f"The document could not be read: {detail}."))
    return 0


def preload() -> None:
    """Import what extracting a document needs (most documents are PDFs)."""
    import pypdfium2  # noqa: F401

    import services.extractor.formats.docx
    import services.extractor.formats.html
    import services.extractor.formats.image
    import services.extractor.formats.pdf  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = private_stdout()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    if "--preload" in args:
        preload()
    raw = sys.stdin.buffer.read()
    if not raw.strip():
        return 0  # a warm child whose service went away: nothing to do
    spec = ExtractSpec.from_json(raw)
    # The job is here: from now on the child gets the full CPU-time allowance for it.
    apply_job_cpu_limit()

    def records() -> Iterator[dict[str, Any]]:
        from services.extractor.formats import extract

        yield from extract(spec)

    try:
        return run(spec, records(), out)
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
