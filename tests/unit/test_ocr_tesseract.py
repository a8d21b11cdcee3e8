"""Tesseract invocation, output clean-up and the size threshold; corpus quality bars."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from PIL import Image

from services.ocr.engine import Engine, answer, find_tessdata
from services.ocr.handler import too_small
from services.ocr.tesseract import (
    clean_ocr_text,
    join_page_text,
    looks_like_image,
    ocr_image,
    valid_lang,
)
from shared.events import ImageRef
from shared.sandbox import WarmPool
from shared.settings import Settings
from tests.fixtures import text_image
from tests.quality import cer

LINES = ["The quick brown fox jumps", "over the lazy dog near", "the river bank today."]


@pytest.fixture
def settings() -> Settings:
    return Settings(ocr_timeout_seconds=60, ocr_cpu_seconds=60)


def test_clean_ocr_text() -> None:
    raw = "Line one   \nLine two\t\n\n\n\n\nNext para \r\n\f"
    assert clean_ocr_text(raw) == "Line one\nLine two\n\nNext para"
    assert clean_ocr_text("\f") == ""
    assert clean_ocr_text("\n\nkeep  inner  spaces\n") == "keep  inner  spaces"


def test_join_page_text_skips_empty_images() -> None:
    assert join_page_text(["first\n", "  \n\f", "second"]) == "first\n\nsecond"
    assert join_page_text([]) == ""


async def test_odd_language_codes_never_reach_tesseract(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    path = tmp_path / "scan.png"
    text_image(LINES).save(path)
    for bad in ["", "eng; rm -rf", "../eng", "-l"]:
        assert not valid_lang(bad)
        with pytest.raises(ValueError):
            await ocr_image(path, lang=bad, settings=settings, job_id=None, engine=ocr_engine)
    assert valid_lang("eng+deu") and valid_lang("chi_sim")


def test_tessdata_is_found_or_configured(tmp_path: Path) -> None:
    found = find_tessdata()
    assert found is not None and Path(found, "eng.traineddata").exists()
    (tmp_path / "xyz.traineddata").write_bytes(b"")
    assert find_tessdata(str(tmp_path)) == f"{tmp_path}/"


def test_size_threshold(settings: Settings) -> None:
    def ref(w: int, h: int) -> ImageRef:
        return ImageRef(image_id=uuid.uuid4(), uri="blob://sha256/" + "0" * 64, width=w, height=h)

    assert too_small(ref(10, 10), settings)  # icon
    assert too_small(ref(2000, 3), settings)  # horizontal rule
    assert too_small(ref(90, 100), settings)  # under the area threshold
    assert not too_small(ref(100, 100), settings)
    assert not too_small(ref(1700, 700), settings)


async def test_ocr_of_drawn_text(tmp_path: Path, settings: Settings, ocr_engine: WarmPool) -> None:
    path = tmp_path / "scan.png"
    text_image(LINES).save(path)
    result = await ocr_image(
        path, lang="eng", settings=settings, job_id=uuid.uuid4(), engine=ocr_engine
    )
    assert result.failure is None
    score = cer("\n".join(LINES), result.text)
    print(f"drawn-text CER {score:.4f} in {result.seconds:.2f} s")
    assert score <= 0.02
    assert "\f" not in result.text and not result.text.endswith("\n")


async def test_non_image_is_refused_before_tesseract(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    # Given a text file, tesseract would read it as a list of image paths to open.
    path = tmp_path / "list.png"
    path.write_text(f"{tmp_path / 'other.png'}\n")
    assert not looks_like_image(path)
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure == "The image is not in a format OCR can read."
    assert result.text == ""


async def test_corrupt_image_fails_with_a_sentence(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure == "The image could not be read (corrupt or unsupported format)."


async def test_missing_language_fails_with_a_sentence(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    path = tmp_path / "scan.png"
    text_image(LINES).save(path)
    result = await ocr_image(path, lang="xyz", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure == "The OCR language 'xyz' is not installed."
    # A refused language leaves the child able to go on with the next image.
    again = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert again.failure is None and "lazy dog" in again.text


async def test_time_limit_is_a_failure_not_an_exception(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    path = tmp_path / "scan.png"
    text_image(LINES * 6, size=(2400, 3200)).save(path)
    tight = Settings(ocr_timeout_seconds=0.05, ocr_cpu_seconds=60)
    result = await ocr_image(path, lang="eng", settings=tight, job_id=None, engine=ocr_engine)
    assert result.failure is not None and "time limit" in result.failure
    # The stopped child is not reused; the next image gets a working one.
    small = tmp_path / "small.png"
    text_image(LINES).save(small)
    again = await ocr_image(small, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert again.failure is None and "lazy dog" in again.text


# --- corpus quality bars ---------------------------------------------------------------

CER_BARS = [("tess-phototest", 0.02), ("tess-8087_054.3B", 0.09)]


def first_frame_png(source: Path, dest: Path) -> Path:
    """What the extractor hands OCR for a frame of a multi-frame TIFF: a PNG (a single-frame
    TIFF tesseract reads goes to OCR as uploaded, the `tif` case)."""
    with Image.open(source) as im:
        im.seek(0)
        im.save(dest, format="PNG")
    return dest


@pytest.mark.corpus
@pytest.mark.parametrize(("name", "bar"), CER_BARS)
@pytest.mark.parametrize("as_png", [False, True], ids=["tif", "png"])
async def test_corpus_cer(
    corpus: Path,
    tmp_path: Path,
    settings: Settings,
    name: str,
    bar: float,
    as_png: bool,
    ocr_engine: WarmPool,
) -> None:
    source = corpus / "pdf_scanned" / f"{name}.tif"
    expected = (corpus / "pdf_scanned" / f"{name}.expected.txt").read_text()
    path = first_frame_png(source, tmp_path / f"{name}.png") if as_png else source
    result = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert result.failure is None
    score = cer(expected, result.text)
    print(f"{path.name}: CER {score:.4f} ({result.seconds:.2f} s)")
    assert score <= bar


@pytest.mark.corpus
async def test_corpus_linn_cer_measured(
    corpus: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    folder = corpus / "pdf_scanned"
    result = await ocr_image(
        folder / "ocrmypdf-linn.png", lang="eng", settings=settings, job_id=None, engine=ocr_engine
    )
    score = cer((folder / "ocrmypdf-linn.expected.txt").read_text(), result.text)
    print(f"ocrmypdf-linn.png: CER {score:.4f} ({result.seconds:.2f} s)")
    assert result.failure is None
    assert score <= 0.03  # measured 0.0098 with PSM 3


async def test_cancelling_the_job_kills_tesseract(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    import asyncio
    import time

    from shared import sandbox

    path = tmp_path / "scan.png"
    text_image(LINES * 6, size=(2400, 3200)).save(path)
    job_id = uuid.uuid4()
    task = asyncio.ensure_future(
        ocr_image(path, lang="eng", settings=settings, job_id=job_id, engine=ocr_engine)
    )
    # Kill only once a child holds the job (the sandbox's registry of children per job):
    # how long a child takes to be handed the job depends on the machine's load.
    deadline = time.monotonic() + 30
    while not sandbox._running.get(job_id) and not task.done():
        assert time.monotonic() < deadline, "no child took the job within 30 s"
        await asyncio.sleep(0.01)
    assert sandbox.kill_job(job_id) == 1
    result = await task
    assert result.cancelled
    assert result.seconds < 5


def engine_pids() -> set[int]:
    import psutil

    return {
        child.pid
        for child in psutil.Process().children()
        if "services.ocr.engine" in child.cmdline()
    }


async def test_one_child_ocrs_image_after_image(
    tmp_path: Path, settings: Settings, ocr_engine: WarmPool
) -> None:
    """The point of the engine: its children keep tesseract loaded between images, through a
    refused image too, instead of a process per image."""
    path = tmp_path / "scan.png"
    text_image(LINES).save(path)
    first = await ocr_image(path, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert first.failure is None
    before = engine_pids()
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    for image in [path, broken, path, path]:
        await ocr_image(image, lang="eng", settings=settings, job_id=None, engine=ocr_engine)
    assert before and engine_pids() == before


def test_engine_answers_each_job_with_one_record(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    text_image(LINES).save(path)
    engine = Engine()
    job = {"path": str(path), "lang": "eng", "psm": 3}
    record, reuse = answer(engine, json.dumps(job).encode())
    assert record["type"] == "text" and "lazy dog" in record["text"] and reuse
    record, reuse = answer(engine, json.dumps({**job, "lang": "xyzzy"}).encode())
    assert record == {"type": "error", "kind": "language"} and reuse
    # Anything unexpected: reported, and the process takes no further image.
    record, reuse = answer(engine, b"not a job")
    assert record == {"type": "error", "kind": "failed"} and not reuse


def test_a_missing_or_garbled_answer_is_a_failure() -> None:
    from services.ocr.tesseract import _answer_of

    assert _answer_of([b'{"type": "text", "text": "Hi"}\n']) == {"type": "text", "text": "Hi"}
    assert _answer_of([b'{"type": "error", "kind": "image"}\n'])["kind"] == "image"
    for lines in ([], [b"not json\n"], [b"[1, 2]\n"], [b'{"type": "text"}\n']):
        assert _answer_of(lines) == {"type": "error", "kind": "failed"}
