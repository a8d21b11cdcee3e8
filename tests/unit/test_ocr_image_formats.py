"""Tesseract reads every upload the extractor passes on as it is, and the pipeline's in-process
tesseract is as accurate as the `tesseract` CLI (the OCR benchmark's baseline) on the same file."""

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
from shared.sandbox import WarmPool
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
    tmp_path: Path,
    settings: Settings,
    fmt: str,
    mode: str,
    params: dict[str, Any],
    ocr_engine: WarmPool,
) -> None:
    source = tmp_path / f"scan.{fmt.lower()}"
    image = text_image(LINES).convert(mode)
    image.save(source, format=fmt, **params)
    path, as_uploaded = page_scan_path(source, tmp_path)
    assert as_uploaded
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
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


# The OCR benchmark's quality target: the pipeline's CER against the ground truth is within
# 0.005 of the CLI's. Measured: linn 0.0103 against 0.0098, the other two equal.
CLI_CER_MARGIN = 0.005


@pytest.mark.corpus
@pytest.mark.parametrize(
    "name", ["tess-phototest.tif", "tess-8087_054.3B.tif", "ocrmypdf-linn.png"]
)
async def test_pipeline_is_as_good_as_the_cli(
    corpus: Path, tmp_path: Path, settings: Settings, name: str, ocr_engine: WarmPool
) -> None:
    source = corpus / "pdf_scanned" / name
    truth = (source.parent / f"{source.stem}.expected.txt").read_text()
    path, as_uploaded = page_scan_path(source, tmp_path)
    assert as_uploaded
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure is None
    ours, cli = cer(truth, result.text), cer(truth, clean_ocr_text(tesseract_cli(source)))
    print(f"{name}: CER {ours:.4f}, the CLI's {cli:.4f}")
    assert ours <= cli + CLI_CER_MARGIN


@pytest.mark.corpus
async def test_pipeline_text_is_close_to_the_cli_text_without_ground_truth(
    corpus: Path, tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    """A scan with no reference text: the in-process engine reads what the CLI reads, give or
    take a few characters (measured: 0.015 as a CER between the two texts)."""
    source = corpus / "pdf_scanned" / "ocrmypdf-typewriter.png"
    path, _ = page_scan_path(source, tmp_path)
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure is None
    assert cer(clean_ocr_text(tesseract_cli(source)), result.text) <= 0.03


@pytest.mark.parametrize("fmt", ["GIF", "JPEG2000"])
async def test_formats_the_bundled_leptonica_lacks_are_read_through_pillow(
    tmp_path: Path, settings: Settings, fmt: str, ocr_engine: WarmPool
) -> None:
    """The CLI read GIF and JPEG 2000 through the system's leptonica; tesserocr's own build
    does not, so the engine decodes them with Pillow (an upload in these formats is converted
    by the extractor, but a stored image in them must not fail)."""
    path = tmp_path / f"scan.{fmt.lower()}"
    text_image(LINES).convert("RGB" if fmt == "JPEG2000" else "L").save(path, format=fmt)
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure is None, result.detail
    assert cer("\n".join(LINES), result.text) <= 0.02
