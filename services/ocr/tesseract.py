"""Tesseract, run in the sandbox, and the clean-up of what it prints.

PSM 3 (automatic page segmentation, tesseract's default) is the mode that meets the corpus
quality bars: single-block modes (4, 6) garble multi-column and sparse pages (CER 0.75 on
tess-8087_054.3B against 0.078 with PSM 3), and PSM 1 adds orientation detection for the
same text at a higher cost.

The call is the OCR benchmark's baseline, `OMP_THREAD_LIMIT=1 tesseract <img> stdout -l eng
--psm 3`, on the file the extractor stored (for most uploads the upload itself): no conversion,
no output file, no extra `-c` option (`tessedit_do_invert=0` saves nothing measurable on the
corpus). Measured around tesseract: ~3 ms of Python CPU per image, the same text as the CLI.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shared.sandbox import run_sandboxed
from shared.settings import Settings

TESSERACT = "tesseract"
DEFAULT_PSM = 3
# The sandbox's failure sentence for a child killed because its job was cancelled.
JOB_CANCELLED = "The job was cancelled."

# Tesseract language codes: "eng", "chi_sim", combined as "eng+deu".
_LANG = re.compile(r"^[A-Za-z][A-Za-z_]{1,31}(\+[A-Za-z][A-Za-z_]{1,31})*$")
_TRAILING_SPACE = re.compile(r"[ \t\r]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")


def valid_lang(lang: str) -> bool:
    return bool(_LANG.match(lang))


def tesseract_argv(path: Path | str, lang: str, psm: int = DEFAULT_PSM) -> list[str]:
    if not valid_lang(lang):
        raise ValueError(f"not a tesseract language code: {lang!r}")
    return [TESSERACT, str(path), "stdout", "-l", lang, "--psm", str(psm)]


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

    @property
    def cancelled(self) -> bool:
        return self.failure == JOB_CANCELLED


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


_LANGUAGE_ERRORS = ("Error opening data file", "Failed loading language", "Could not initialize")
_IMAGE_ERRORS = ("Error in ", "libpng error", "cannot be read", "Unsupported", "TIFF", "JPEG")


def describe_failure(failure: str, stderr: str, lang: str) -> str:
    """Turn the sandbox's reason plus tesseract's stderr into one readable sentence.

    Matches on any line, the first included: the sandbox may keep only the first write.
    """
    if any(marker in stderr for marker in _LANGUAGE_ERRORS):
        return f"The OCR language '{lang}' is not installed."
    if failure.startswith("Processing failed (exit status") and any(
        marker in stderr for marker in _IMAGE_ERRORS
    ):
        return "The image could not be read (corrupt or unsupported format)."
    return failure


async def ocr_image(
    path: Path | str,
    *,
    lang: str,
    settings: Settings,
    job_id: uuid.UUID | None,
    psm: int = DEFAULT_PSM,
) -> OcrResult:
    """OCR one image file in a sandboxed, single-threaded tesseract process.

    Single-threaded because tesseract's OpenMP threads make it ~3x slower on a small machine;
    parallelism comes from running several tesseract processes (the consumer's prefetch).
    """
    if not looks_like_image(path):
        return OcrResult(text="", seconds=0.0, failure="The image is not in a format OCR can read.")
    lines: list[bytes] = []

    async def collect(line: bytes) -> None:
        lines.append(line)

    started = time.perf_counter()
    result = await run_sandboxed(
        tesseract_argv(path, lang, psm),
        job_id=job_id,
        timeout=settings.ocr_timeout_seconds,
        cpu_seconds=settings.ocr_cpu_seconds,
        memory_mb=settings.ocr_memory_mb,
        on_line=collect,
        env={"OMP_THREAD_LIMIT": "1"},
    )
    seconds = time.perf_counter() - started
    text = clean_ocr_text(b"".join(lines).decode("utf-8", "replace"))
    failure = result.failure
    if failure is not None and failure != JOB_CANCELLED:
        failure = describe_failure(failure, result.stderr, lang)
    detail = result.stderr[-500:] if failure else ""
    return OcrResult(text=text, seconds=seconds, failure=failure, detail=detail)
