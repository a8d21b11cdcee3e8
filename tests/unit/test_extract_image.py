"""Image documents: what tesseract reads as it is goes to OCR untouched (the upload's own blob,
header read only); the rest is decoded and stored as a PNG that keeps the file's DPI."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from services.extractor.formats import extract
from services.extractor.formats.image import document_blob_uri, tesseract_reads_as_is
from services.extractor.spec import ExtractionFatal, ExtractSpec
from shared.blobstore import BlobStore
from shared.sniff import sniff_path
from tests.fixtures import text_image


def image_bytes(image: Image.Image, fmt: str, **params: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def upload(tmp_path: Path, data: bytes) -> tuple[BlobStore, Path]:
    """Store the bytes as the ingest service does; the extractor is handed the blob's path."""
    blobs = BlobStore(tmp_path / "blobs")
    return blobs, blobs.local_path(blobs.put_bytes(data))


def run(path: Path, blobs: BlobStore, **kw: Any) -> list[dict[str, Any]]:
    fmt = kw.pop("format", None) or sniff_path(path)
    spec = ExtractSpec(path=str(path), format=fmt, blob_dir=str(blobs.root), **kw)
    return list(extract(spec))


def blob_files(blobs: BlobStore) -> list[Path]:
    return sorted(p for p in blobs.root.rglob("*") if p.is_file())


def only_scan(records: list[dict[str, Any]]) -> dict[str, Any]:
    meta, page = records
    assert meta["pages_total"] == 1 and page["type"] == "page" and page["error"] is None
    (scan,) = page["images"]
    assert scan["kind"] == "page-scan"
    return scan


def page_image() -> Image.Image:
    return text_image(["Scanned page", "for the OCR"], size=(600, 300))


@pytest.mark.parametrize(
    ("fmt", "mode", "params"),
    [
        ("PNG", "L", {}),
        ("PNG", "1", {}),
        ("PNG", "RGB", {}),
        ("PNG", "P", {}),
        ("PNG", "RGBA", {}),
        ("JPEG", "L", {}),
        ("JPEG", "RGB", {"progressive": True}),
        ("TIFF", "1", {"compression": "group4", "dpi": (300, 300)}),
        ("TIFF", "L", {"compression": "tiff_lzw"}),
        ("TIFF", "RGB", {"compression": "tiff_deflate"}),
        ("TIFF", "L", {}),
    ],
)
def test_upload_tesseract_reads_is_its_own_page_scan(
    tmp_path: Path, fmt: str, mode: str, params: dict[str, Any]
) -> None:
    blobs, path = upload(tmp_path, image_bytes(page_image().convert(mode), fmt, **params))
    scan = only_scan(run(path, blobs))
    assert scan["uri"] == document_blob_uri_of(path)
    assert (scan["width"], scan["height"]) == (600, 300)
    assert blob_files(blobs) == [path]  # nothing decoded, copied or re-encoded


def document_blob_uri_of(path: Path) -> str:
    return BlobStore.uri_for(path.name)


def test_pixels_are_never_decoded_for_a_direct_upload(tmp_path: Path) -> None:
    data = image_bytes(page_image(), "PNG")
    # The header is intact, the pixel data truncated: only tesseract would notice.
    blobs, path = upload(tmp_path, data[: len(data) // 2])
    scan = only_scan(run(path, blobs))
    assert scan["uri"] == document_blob_uri_of(path)
    assert (scan["width"], scan["height"]) == (600, 300)


def test_local_file_is_stored_once_as_a_blob(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(image_bytes(page_image(), "PNG"))
    blobs = BlobStore(tmp_path / "blobs")
    scan = only_scan(run(path, blobs))
    assert blobs.read_bytes(scan["uri"]) == path.read_bytes()


def test_file_named_like_a_blob_outside_the_store_is_copied(tmp_path: Path) -> None:
    data = image_bytes(page_image(), "PNG")
    blobs = BlobStore(tmp_path / "blobs")
    uri = blobs.put_bytes(data)
    digest = BlobStore.digest_of(uri)
    elsewhere = tmp_path / "other" / digest
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(image_bytes(page_image().convert("1"), "PNG"))  # not the blob
    spec = ExtractSpec(path=str(elsewhere), format="png", blob_dir=str(blobs.root))
    assert document_blob_uri(spec, blobs) is None
    scan = only_scan(run(elsewhere, blobs, format="png"))
    assert scan["uri"] != uri
    assert blobs.read_bytes(scan["uri"]) == elsewhere.read_bytes()


def test_document_blob_uri_is_refused_for_non_digest_names(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    path = tmp_path / "scan.png"
    path.write_bytes(b"x")
    spec = ExtractSpec(path=str(path), format="png", blob_dir=str(blobs.root))
    assert document_blob_uri(spec, blobs) is None


@pytest.mark.parametrize(
    ("fmt", "mode", "params"),
    [
        ("JPEG", "CMYK", {"dpi": (200, 200)}),
        ("TIFF", "L", {"compression": "jpeg", "dpi": (200, 200)}),
        ("TIFF", "I;16", {"dpi": (200, 200)}),
    ],
)
def test_what_tesseract_may_not_read_becomes_a_png_with_its_dpi(
    tmp_path: Path, fmt: str, mode: str, params: dict[str, Any]
) -> None:
    source = page_image().convert("L" if mode == "I;16" else mode)
    if mode == "I;16":
        source = source.convert("I").point(lambda v: v * 256).convert("I;16")
    try:
        data = image_bytes(source, fmt, **params)
    except (OSError, TypeError, ValueError) as exc:  # an encoder this PIL build lacks
        pytest.skip(f"cannot write {fmt} {mode} {params}: {exc}")
    blobs, path = upload(tmp_path, data)
    scan = only_scan(run(path, blobs))
    assert scan["uri"] != document_blob_uri_of(path)
    with Image.open(blobs.local_path(scan["uri"])) as png:
        assert png.format == "PNG" and png.size == (600, 300)
        assert [round(v) for v in png.info["dpi"]] == [200, 200]


def test_multi_frame_tiff_frames_are_pngs_with_their_dpi(tmp_path: Path) -> None:
    first = Image.new("1", (200, 100), 1)
    second = Image.new("L", (300, 150), 200)
    data = image_bytes(first, "TIFF", save_all=True, append_images=[second], dpi=(300, 300))
    blobs, path = upload(tmp_path, data)
    records = run(path, blobs)
    assert records[0] == {"type": "meta", "format": "tiff", "pages_total": 2}
    pages = records[1:]
    assert [p["page"] for p in pages] == [1, 2]
    sizes = []
    for page in pages:
        (scan,) = page["images"]
        with Image.open(blobs.local_path(scan["uri"])) as png:
            assert png.format == "PNG"
            assert [round(v) for v in png.info["dpi"]] == [300, 300]
            sizes.append(png.size)
        assert (scan["width"], scan["height"]) == sizes[-1]
    assert sizes == [(200, 100), (300, 150)]


def test_no_ocr_means_no_blob(tmp_path: Path) -> None:
    blobs, path = upload(tmp_path, image_bytes(page_image(), "PNG"))
    records = run(path, blobs, ocr="never")
    assert records[1]["images"] == [] and records[1]["error"] is None
    assert blob_files(blobs) == [path]


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_single_frame_over_the_pixel_limit_is_fatal(tmp_path: Path) -> None:
    blobs, path = upload(tmp_path, image_bytes(page_image(), "PNG"))
    with pytest.raises(ExtractionFatal, match="600×300 pixels, more than the limit of 100000"):
        run(path, blobs, max_image_pixels=100_000)


def test_decompression_bomb_is_refused_from_the_header(tmp_path: Path) -> None:
    blobs, path = upload(tmp_path, image_bytes(page_image(), "PNG"))
    with pytest.raises(ExtractionFatal, match="larger than the limit of 50000 pixels"):
        run(path, blobs, max_image_pixels=50_000)


def test_later_frame_over_the_pixel_limit_is_fatal(tmp_path: Path) -> None:
    first = Image.new("L", (100, 100), 255)
    second = Image.new("L", (200, 100), 255)
    data = image_bytes(first, "TIFF", save_all=True, append_images=[second])
    blobs, path = upload(tmp_path, data)
    with pytest.raises(ExtractionFatal, match="Page 2 of the image is 200×100 pixels"):
        run(path, blobs, max_image_pixels=15_000)


def test_damaged_header_is_fatal(tmp_path: Path) -> None:
    blobs, path = upload(tmp_path, b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    with pytest.raises(ExtractionFatal, match="damaged"):
        run(path, blobs, format="png")


@pytest.mark.corpus
def test_corpus_scans_go_to_ocr_as_uploaded(corpus: Path, tmp_path: Path) -> None:
    folder = corpus / "pdf_scanned"
    scans = sorted(p for p in folder.iterdir() if p.suffix in (".png", ".tif", ".jpg"))
    assert scans
    for source in scans:
        blobs, path = upload(tmp_path / source.stem, source.read_bytes())
        scan = only_scan(run(path, blobs))
        assert scan["uri"] == document_blob_uri_of(path), source.name
        with Image.open(source) as im:
            assert (scan["width"], scan["height"]) == im.size


class FakeTiff:
    format = "TIFF"
    mode = "RGB"
    info = {"compression": "tiff_lzw"}

    def __init__(self, **tags: Any) -> None:
        self.tag_v2 = {258: (8, 8, 8), 284: 1} | {int(k[1:]): v for k, v in tags.items()}


@pytest.mark.parametrize(
    ("tags", "direct"),
    [
        ({}, True),
        ({"t258": (16, 16, 16)}, False),  # 48-bit colour
        ({"t339": (3, 3, 3)}, False),  # floating-point samples
        ({"t284": 2}, False),  # planes stored separately
        ({"t322": 256}, False),  # tiled
    ],
)
def test_tiff_layouts_tesseract_may_not_read_are_reencoded(
    tags: dict[str, Any], direct: bool
) -> None:
    assert tesseract_reads_as_is(FakeTiff(**tags)) is direct
