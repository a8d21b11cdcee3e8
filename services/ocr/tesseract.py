"""Tesseract, run in sandboxed, long-lived children (services/ocr/engine.py), and the clean-up
of what it returns.

Tesseract gets the settings of the OCR benchmark's baseline (`OMP_THREAD_LIMIT=1 tesseract
<img> stdout -l eng --psm 3`), in-process (tesserocr), on the file the extractor stored (for
most uploads the upload itself). Why PSM 3 and why in-process:
docs/decisions/0402-ocr-in-process.md.
"""

from __future__ import annotations

import json
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from services.ocr.engine import DEFAULT_PSM
from services.ocr.records import FAILED, OcrRecord, RefusalKind
from shared.ocr_languages import valid_ocr_lang
from shared.sandbox import ChildLimits, SandboxOutcome, WarmPool, run_sandboxed
from shared.sandbox.handoff import job_handoff
from shared.settings import Settings

ENGINE_ARGV = (sys.executable, "-m", "services.ocr.engine")

_RECORD: TypeAdapter[OcrRecord] = TypeAdapter(Annotated[OcrRecord, Field(discriminator="type")])

_TRAILING_SPACE = re.compile(r"[ \t\r]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


def valid_lang(lang: str) -> bool:
    """Tesseract language codes: "eng", "chi_sim", combined as "deu+eng"."""
    return valid_ocr_lang(lang)


def engine_pool(settings: Settings) -> WarmPool:
    """Children that OCR one image after another, at most ocr_concurrency of them, started
    ahead with the default language loaded; a child the sandbox stopped is replaced."""
    env = {"OMP_THREAD_LIMIT": "1"}  # single-threaded: parallelism comes from the children
    if settings.ocr_tessdata_dir is not None:
        env["DOCPIPE_OCR_TESSDATA_DIR"] = str(settings.ocr_tessdata_dir)
    slots = max(1, settings.ocr_concurrency)
    return WarmPool(
        [*ENGINE_ARGV, "--preload", settings.ocr_lang],
        size=slots,
        cpu_seconds=settings.ocr_cpu_seconds,
        memory_mb=settings.ocr_memory_mb,
        env=env,
        max_children=slots,
        child_limits=ChildLimits.from_settings(settings),
    )


def clean_ocr_text(raw: str) -> str:
    """Drop form feeds and trailing spaces, keep at most one blank line, trim the ends."""
    text = raw.replace("\r\n", "\n").replace("\f", "\n")
    text = _TRAILING_SPACE.sub("", text)
    text = _BLANK_RUN.sub("\n\n", text)
    return text.strip("\n")


def join_page_text(texts: list[str]) -> str:
    """One page's text from its images' texts, in image order, a blank line between them."""
    return clean_ocr_text("\n\n".join(t for t in texts if t.strip()))


@dataclass(frozen=True)
class OcrResult:
    text: str
    seconds: float
    failure: str | None  # a sentence a person can read, or None on success
    detail: str = ""  # the end of tesseract's stderr, for the logs
    # How the child's job ended; OK with a failure: the child refused the image or language.
    outcome: SandboxOutcome = SandboxOutcome.OK
    confidence: float | None = None  # mean word confidence, 0-100 (None: no words)
    words: int = 0  # words recognised
    rotated: int = 0  # degrees the image was turned (counter-clockwise) to read it upright

    @property
    def cancelled(self) -> bool:
        return self.outcome is SandboxOutcome.CANCELLED


# Image signatures tesseract (leptonica) reads. Anything else is refused before tesseract sees
# it: given a file that is not an image, tesseract reads it as a list of image paths to open.
_IMAGE_MAGIC: tuple[bytes, ...] = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
    b"GIF87a",
    b"GIF89a",
    b"BM",  # BMP
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",  # JPEG 2000
    b"\xffO\xffQ",  # JPEG 2000 codestream
    b"P1",
    b"P2",
    b"P3",
    b"P4",
    b"P5",
    b"P6",  # PNM
)


def looks_like_image(path: Path | str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return any(head.startswith(magic) for magic in _IMAGE_MAGIC)


def _answer_of(lines: list[bytes]) -> OcrRecord:
    """The engine's answer record (its last line); a missing or garbled one is a failure."""
    if not lines:
        return FAILED
    try:
        return _RECORD.validate_json(lines[-1])
    except ValidationError:
        return FAILED


def describe_refusal(kind: RefusalKind, lang: str) -> str:
    """The sentence for an image the engine refused (see services/ocr/engine.py)."""
    if kind == "language":
        return f"The OCR language '{lang}' is not installed."
    if kind == "image":
        return "The image could not be read (corrupt or unsupported format)."
    return "OCR failed on this image."


async def ocr_image(
    path: Path | str,
    *,
    lang: str,
    settings: Settings,
    job_id: uuid.UUID | None,
    engine: WarmPool,
    psm: int = DEFAULT_PSM,
) -> OcrResult:
    """OCR one image file in one of the engine's sandboxed children. Never raises for a bad
    image, a missing language or a stopped child: the result says why in a sentence."""
    if not valid_lang(lang):
        raise ValueError(f"not a tesseract language code: {lang!r}")
    if not looks_like_image(path):
        return OcrResult(text="", seconds=0.0, failure="The image is not in a format OCR can read.")
    run_as = engine.child_limits.run_as
    async with job_handoff(settings.sandbox_handoff_dir, run_as, path) as handoff:
        if handoff is not None:  # the child cannot read the store: it gets a copy
            path = handoff.input
        return await _recognise(
            path, lang=lang, settings=settings, job_id=job_id, engine=engine, psm=psm
        )


async def _recognise(
    path: Path | str,
    *,
    lang: str,
    settings: Settings,
    job_id: uuid.UUID | None,
    engine: WarmPool,
    psm: int,
) -> OcrResult:
    lines: list[bytes] = []

    async def collect(line: bytes) -> None:
        lines.append(line)

    job = {
        "path": str(path),
        "lang": lang,
        "psm": psm,
        "tessdata": str(settings.ocr_tessdata_dir) if settings.ocr_tessdata_dir else None,
        "orient_below": (
            settings.ocr_orientation_below_confidence if settings.ocr_orientation else None
        ),
    }
    started = time.perf_counter()
    result = await run_sandboxed(
        engine.argv,
        job_id=job_id,
        timeout=settings.ocr_timeout_seconds,
        cpu_seconds=settings.ocr_cpu_seconds,
        memory_mb=settings.ocr_memory_mb,
        on_line=collect,
        stdin=json.dumps(job).encode(),
        warm=engine,
    )
    seconds = time.perf_counter() - started
    if not result.ok:
        return OcrResult("", seconds, result.failure, result.stderr[-500:], result.outcome)
    answer = _answer_of(lines)
    if answer["type"] == "error":
        failure = describe_refusal(answer["kind"], lang)
        return OcrResult("", seconds, failure, result.stderr[-500:], result.outcome)
    return OcrResult(
        clean_ocr_text(answer["text"]),
        seconds,
        None,
        outcome=result.outcome,
        confidence=answer.get("confidence"),
        words=answer.get("words", 0),
        rotated=answer.get("rotated", 0),
    )
