"""The per-format extractors (services/extractor/formats), called as the extraction child
calls them: the input is stored as an upload, sniffed as the extractor service sniffs it
(inputs in no supported format are refused before extraction, so they are skipped), then
its records are read. Every record must be one the parent accepts (spec.ChildRecord), the
meta record first and pages in order. A document that cannot be read must end in
ExtractionFatal (its sentence), or MemoryError/RecursionError (which the child turns into
theirs); any other exception reached the child's catch-all, whose sentence is the library's
message: a finding. Tight limits keep each input small (FUZZ_INPUT_SECONDS bounds its time).

FUZZ_FORMAT=pdf (or docx, html, csv, txt, png, jpeg, tiff) fuzzes from that format's seeds
only."""

from __future__ import annotations

import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from pydantic import TypeAdapter

from tests.fuzz.runner import instrumented, main

with instrumented():
    from services.extractor.child import extract_records
    from services.extractor.spec import ChildRecord, ExtractionFatal, ExtractSpec
    from shared.sniff import sniff_path

WORK = Path(tempfile.mkdtemp(prefix="fuzz-extract-"))
UPLOAD = WORK / "upload"
BLOBS = WORK / "blobs"
RECORD: TypeAdapter[ChildRecord] = TypeAdapter(ChildRecord)
# What the child says itself for these (services/extractor/child.py fatal_reason).
EXPECTED = (ExtractionFatal, MemoryError, RecursionError)
logging.disable(logging.WARNING)
warnings.simplefilter("ignore")


def spec_for(fmt: str) -> ExtractSpec:
    return ExtractSpec(
        path=str(UPLOAD),
        format=fmt,
        blob_dir=str(BLOBS),
        max_pages=20,
        max_image_pixels=4_000_000,
        max_extracted_chars=200_000,
        ocr_dpi=72,
    )


def target(data: bytes) -> None:
    UPLOAD.write_bytes(data)
    if not data:
        return
    fmt = sniff_path(UPLOAD)
    if fmt is None:
        return
    if BLOBS.exists():
        shutil.rmtree(BLOBS)
    BLOBS.mkdir()
    spec = spec_for(fmt)
    records = extract_records(spec)
    pages: list[int] = []
    try:
        for index, raw in enumerate(records):
            record = RECORD.validate_python(raw)
            if index == 0:
                assert record["type"] == "meta", record
                first = record.get("first_page", 1)
            else:
                assert record["type"] == "page", record
                pages.append(record["page"])
    except EXPECTED:
        return
    finally:
        records.close()
    assert pages == list(range(first, first + len(pages))), pages


def seeds() -> list[bytes]:
    from PIL import Image

    from tests.fixtures import docx_file, pdf_with_pages

    made = Path(tempfile.mkdtemp(prefix="fuzz-seeds-"))
    try:
        pdf = pdf_with_pages(made / "a.pdf", ["Hello fuzz. Page one.", "Page two (2)."])
        scan = pdf_with_pages(made / "b.pdf", [Image.new("L", (60, 40), 128)])
        docx = docx_file(made / "a.docx", ["First paragraph.", "Second & last."])
        images = []
        for kind in ("PNG", "JPEG", "TIFF"):
            out = io.BytesIO()
            Image.new("RGB", (40, 30), (200, 10, 10)).save(out, format=kind)
            images.append(out.getvalue())
        found = {
            "pdf": [pdf.read_bytes(), scan.read_bytes()],
            "docx": [docx.read_bytes()],
            "html": [
                b"<!doctype html><html><head><title>T</title></head><body><h1>Head</h1>"
                b"<p>Para &amp; more</p><table><tr><td>1</td></tr></table></body></html>"
            ],
            "csv": [b'name,qty\nalpha,1\nbeta,2\n"quoted, cell",3\n'],
            "txt": [b"Plain text.\n\nSecond paragraph \xc3\xa9.\n", b"caf\xe9 latin-1\n"],
            "png": [images[0]],
            "jpeg": [images[1]],
            "tiff": [images[2]],
        }
    finally:
        shutil.rmtree(made)
    chosen = os.environ.get("FUZZ_FORMAT")
    if chosen:
        return found[chosen]
    return [seed for group in found.values() for seed in group]


if __name__ == "__main__":
    try:
        sys.exit(main("extractors", target, seeds))
    finally:
        shutil.rmtree(WORK, ignore_errors=True)
