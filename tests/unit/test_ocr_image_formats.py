"""Tesseract reads every upload the extractor passes on as it is, and the pipeline's call
gives the `tesseract` CLI's text (the OCR benchmark's baseline) on the same file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.extractor.formats import extract
from services.extractor.spec import ExtractSpec
from services.ocr.tesseract import clean_ocr_text, ocr_image
from shared.blobstore import BlobStore
from shared.settings import Settings
from shared.sniff import sniff_path
from tests.fixtures import text_image
from tests.quality import cer

LINES = ["The quick brown fox jumps", "over the lazy dog near", "the river bank today."]


@pytest.fixture
def settings() -> Settings:
    return Settings(ocr_timeout_seconds=60, ocr_cpu_seconds=60)


def page_scan_path(source: Path, tmp_path: Path) -> tuple[Path, bool]:
    """Upload the file as ingest does and extract it: the file OCR is given, and whether it is
    the upload itself."""
    blobs = BlobStore(tmp_path / "blobs")
    uploaded = blobs.local_path(blobs.put_bytes(source.read_bytes()))
    spec = ExtractSpec(path=str(uploaded), format=sniff_path(uploaded), blob_dir=str(blobs.root))
    _meta, page = list(extract(spec))
    (scan,) = page["images"]
    path = blobs.local_path(scan["uri"])
    return path, path == uploaded


@pytest.mark.parametrize(
    ("fmt", "mode", "params"),
    [
        ("PNG", "1", {}),
        ("PNG", "P", {}),
        ("PNG", "RGBA", {}),
        ("JPEG", "L", {"quality": 90}),
        ("JPEG", "RGB", {"quality": 90, "progressive": True}),
        ("TIFF", "1", {"compression": "group4", "dpi": (300, 300)}),
        ("TIFF", "1", {"compression": "group3"}),
        ("TIFF", "L", {"compression": "tiff_lzw"}),
        ("TIFF", "P", {"compression": "packbits"}),
        ("TIFF", "RGB", {"compression": "tiff_adobe_deflate"}),
        ("TIFF", "L", {}),
    ],
)
async def test_tesseract_reads_what_is_passed_as_uploaded(
    tmp_path: Path, settings: Settings, fmt: str, mode: str, params: dict[str, Any]
) -> None:
    source = tmp_path / f"scan.{fmt.lower()}"
    image = text_image(LINES).convert(mode)
    image.save(source, format=fmt, **params)
    path, as_uploaded = page_scan_path(source, tmp_path)
    assert as_uploaded
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None)
    assert result.failure is None, result.detail
    assert cer("\n".join(LINES), result.text) <= 0.02


def tesseract_cli(path: Path) -> str:
    """The benchmark's baseline call."""
    out = subprocess.run(
        ["tesseract", str(path), "stdout", "-l", "eng", "--psm", "3"],
        capture_output=True,
        check=True,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    return out.stdout.decode("utf-8", "replace")


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["tess-phototest.tif", "ocrmypdf-typewriter.png"])
async def test_pipeline_text_is_the_cli_text(
    corpus: Path, tmp_path: Path, settings: Settings, name: str
) -> None:
    source = corpus / "pdf_scanned" / name
    path, as_uploaded = page_scan_path(source, tmp_path)
    assert as_uploaded
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None)
    assert result.failure is None
    assert result.text == clean_ocr_text(tesseract_cli(source))
