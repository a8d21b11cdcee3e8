"""The OCR child: tesseract in-process (tesserocr), one image after another.

Run as `python -m services.ocr.engine [--preload LANG]` by a shared.sandbox.WarmPool that
reuses its children (the job protocol in shared/sandbox/protocol.py), so the language model
stays loaded between images (why not the `tesseract` CLI per image:
docs/decisions/0402-ocr-in-process.md). The child stays in the sandbox: address-space limit,
a CPU allowance re-armed per image, the wall-clock timeout and kill-by-job.

A job's payload is JSON `{"path", "lang", "psm", "tessdata", "orient_below"}`; the answer is
one JSON line, a records.OcrRecord (`{"type": "text", "text", "confidence", "words",
"rotated"}` or `{"type": "error", "kind": ...}`), then
the sandbox's end-of-job mark. The child goes on after a bad image or an unknown language
(nothing is left half-done in tesseract's state); after anything unexpected, or once it holds
much memory, it says it must not be reused and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import traceback
from collections import OrderedDict
from dataclasses import dataclass
from typing import IO, Any

from services.ocr.records import ErrorRecord, OcrRecord, RefusalKind, TextRecord
from shared.ocr_languages import OSD, find_tessdata
from shared.sandbox import apply_job_cpu_limit, private_stdout, serve_jobs, serving_jobs

# A warm child that recognised a large page keeps some of that heap; past this it is replaced
# rather than reused (the service's budget, children included, is 300 MB; a child holding the
# English model after a few pages is ~90 MB).
REUSE_MAX_RSS_MB = 130
# Automatic page segmentation, tesseract's default (why: services/ocr/tesseract.py).
DEFAULT_PSM = 3
# Tesseract's page segmentation mode 0: orientation and script detection only.
PSM_OSD_ONLY = 0
# Language models kept initialised per child (each ~15-40 MB): the default and one other.
MAX_LOADED_LANGUAGES = 2
# Orientation detection is asked only when the upright reading found at least this many words
# (a rotated page of text reads as many low-confidence words; a figure or a speck, as few).
ORIENTATION_MIN_WORDS = 5


class OcrRefused(Exception):
    """The image or the language cannot be OCRed; the child itself is fine."""

    def __init__(self, kind: RefusalKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Recognised:
    """One image's reading: its text, its words' confidences (0-100) and the degrees the
    image was turned counter-clockwise to read it."""

    text: str
    confidences: tuple[float, ...]
    rotated: int = 0

    @property
    def confidence(self) -> float | None:
        return sum(self.confidences) / len(self.confidences) if self.confidences else None

    def record(self) -> TextRecord:
        confidence = self.confidence
        return TextRecord(
            type="text",
            text=self.text,
            confidence=round(confidence, 2) if confidence is not None else None,
            words=len(self.confidences),
            rotated=self.rotated,
        )


def needs_orientation_check(reading: Recognised, below: float | None) -> bool:
    """The quick check: an upright page of text reads at a mean word confidence of 85-95, the
    same page turned 90 or 180 degrees at 35-45 (docs/decisions/1010-ocr-languages.md), so
    orientation detection runs only for a reading of enough words below `below`."""
    confidence = reading.confidence
    return (
        below is not None
        and confidence is not None
        and len(reading.confidences) >= ORIENTATION_MIN_WORDS
        and confidence < below
    )


class Engine:
    """Initialised tesseract APIs by (language, page segmentation mode), least recent out."""

    def __init__(self) -> None:
        import tesserocr

        self._tesserocr = tesserocr
        self._apis: OrderedDict[tuple[str, int, str], Any] = OrderedDict()
        self._osd: Any = None
        self._osd_missing = False

    def api(self, lang: str, psm: int, tessdata: str | None) -> Any:
        path = find_tessdata(tessdata) or ""
        key = (lang, psm, path)
        api = self._apis.get(key)
        if api is not None:
            self._apis.move_to_end(key)
            return api
        try:
            api = self._tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=psm)
        except RuntimeError as exc:
            raise OcrRefused("language", str(exc)) from exc
        self._apis[key] = api
        while len(self._apis) > MAX_LOADED_LANGUAGES:
            _key, oldest = self._apis.popitem(last=False)
            oldest.End()
        return api

    def osd_api(self, tessdata: str | None) -> Any:
        """Orientation detection's API (kept beside the languages'), or None without osd data."""
        if self._osd is None and not self._osd_missing:
            try:
                path = find_tessdata(tessdata) or ""
                self._osd = self._tesserocr.PyTessBaseAPI(path=path, lang=OSD, psm=PSM_OSD_ONLY)
            except RuntimeError as exc:
                self._osd_missing = True
                print(f"orientation detection unavailable: {exc}", file=sys.stderr)
        return self._osd

    def recognise(
        self,
        path: str,
        lang: str,
        psm: int,
        tessdata: str | None,
        orient_below: float | None = None,
    ) -> Recognised:
        """The image's reading; one that looks rotated (needs_orientation_check) is read again
        turned the way orientation detection says, and the more confident reading is kept."""
        api = self.api(lang, psm, tessdata)
        upright = _read(api, path)
        if not needs_orientation_check(upright, orient_below):
            return upright
        degrees = self.orientation(path, tessdata)
        if not degrees:
            return upright
        try:
            with _open_with_pillow(path) as image:
                turned = _read(api, path, image.rotate(degrees, expand=True), _dpi_of(image))
        except OcrRefused:  # Pillow cannot decode what leptonica read: keep the upright reading
            return upright
        better = (turned.confidence or 0.0) > (upright.confidence or 0.0)
        return Recognised(turned.text, turned.confidences, degrees) if better else upright

    def orientation(self, path: str, tessdata: str | None) -> int:
        """Degrees to turn the image counter-clockwise to make it upright (0 when unknown)."""
        osd = self.osd_api(tessdata)
        if osd is None:
            return 0
        try:
            _set_image(osd, path)
            found = osd.DetectOrientationScript()
        except (RuntimeError, OcrRefused):
            return 0  # too little text to tell
        finally:
            osd.Clear()
        return int(found["orient_deg"]) % 360 if found else 0


def _set_image(api: Any, path: str) -> None:
    try:
        # Leptonica reads the file as the CLI would (resolution from the file included).
        api.SetImageFile(path)
    except Exception:  # RuntimeError, or Pillow's error where tesserocr asked Pillow
        api.SetImage(_decode_with_pillow(path))


def _read(api: Any, path: str, image: Any = None, dpi: int | None = None) -> Recognised:
    """Recognise the file (or `image`, a decoded copy of it) with the initialised `api`."""
    if image is None:
        _set_image(api, path)
    else:
        api.SetImage(image)
        if dpi:
            api.SetSourceResolution(dpi)
    try:
        text = str(api.GetUTF8Text())
        # The words' confidences, as the conf column of tesseract's TSV output (-1: not a word).
        confidences = tuple(float(c) for c in api.AllWordConfidences() if c >= 0)
        return Recognised(text, confidences)
    finally:
        api.Clear()  # drop the page's image and results now, not when the next one comes


def _dpi_of(image: Any) -> int | None:
    dpi = image.info.get("dpi")
    return round(float(dpi[0])) if dpi and dpi[0] else None


@contextlib.contextmanager
def _open_with_pillow(path: str) -> Any:
    image = _decode_with_pillow(path)
    try:
        yield image
    finally:
        image.close()


def _decode_with_pillow(path: str) -> Any:
    """The bundled leptonica reads PNG, JPEG, TIFF, WebP, BMP and PNM; Pillow covers the rest
    the CLI read (GIF, JPEG 2000). An image neither can read is refused."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            copy = image.copy()
            copy.info = dict(image.info)  # the resolution, for a turned copy
            return copy
    except Exception as exc:
        raise OcrRefused("image", f"{type(exc).__name__}: {exc}") from exc


def answer(engine: Engine, payload: bytes) -> tuple[OcrRecord, bool]:
    """One job's answer line and whether the child may go on."""
    try:
        job = json.loads(payload)
        reading = engine.recognise(
            job["path"], job["lang"], int(job["psm"]), job.get("tessdata"), job.get("orient_below")
        )
    except OcrRefused as exc:
        print(f"OCR refused ({exc.kind}): {exc.detail}", file=sys.stderr)
        return ErrorRecord(type="error", kind=exc.kind), True
    except Exception:  # unexpected: reported, and this process does not take another image
        traceback.print_exc()
        return ErrorRecord(type="error", kind="failed"), False
    return reading.record(), True


def serve(out: IO[str], preload: str | None) -> int:
    engine = Engine()
    if preload:
        # A language that is not there is reported by the first job that asks for it.
        with contextlib.suppress(OcrRefused):
            engine.api(preload, DEFAULT_PSM, os.environ.get("DOCPIPE_OCR_TESSDATA_DIR"))

    def recognise_one(payload: bytes) -> bool:
        record, reusable = answer(engine, payload)
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return reusable

    return serve_jobs(out, recognise_one, max_rss_mb=REUSE_MAX_RSS_MB)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = private_stdout()
    preload = args[args.index("--preload") + 1] if "--preload" in args else None
    try:
        if serving_jobs():
            return serve(out, preload)
        # A one-job child (a job whose limits the pool's children do not have): stdin is the
        # payload, the answer line is the whole output.
        payload = sys.stdin.buffer.read()
        apply_job_cpu_limit()
        record, _ = answer(Engine(), payload)
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return 0
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
