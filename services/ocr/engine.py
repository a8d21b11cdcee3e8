"""The OCR child: tesseract in-process (tesserocr), one image after another.

Run as `python -m services.ocr.engine [--preload LANG]` by a shared.sandbox.WarmPool that
reuses its children (the job protocol in shared/sandbox/protocol.py), so the language model
stays loaded between images (why not the `tesseract` CLI per image:
docs/decisions/0402-ocr-in-process.md). The child stays in the sandbox: address-space limit,
a CPU allowance re-armed per image, the wall-clock timeout and kill-by-job.

A job's payload is JSON `{"path", "lang", "psm", "tessdata"}`; the answer is one JSON line, a
records.OcrRecord (`{"type": "text", "text": ...}` or `{"type": "error", "kind": ...}`), then
the sandbox's end-of-job mark. The child goes on after a bad image or an unknown language
(nothing is left half-done in tesseract's state); after anything unexpected, or once it holds
much memory, it says it must not be reused and exits.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import json
import os
import sys
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

from services.ocr.records import ErrorRecord, OcrRecord, RefusalKind, TextRecord
from shared.sandbox import apply_job_cpu_limit, private_stdout, serve_jobs, serving_jobs

# A warm child that recognised a large page keeps some of that heap; past this it is replaced
# rather than reused (the service's budget, children included, is 300 MB; a child holding the
# English model after a few pages is ~90 MB).
REUSE_MAX_RSS_MB = 130
# Automatic page segmentation, tesseract's default (why: services/ocr/tesseract.py).
DEFAULT_PSM = 3
# Language models kept initialised per child (each ~15-40 MB): the default and one other.
MAX_LOADED_LANGUAGES = 2

# Where distributions put tesseract's language data, in the order they are tried.
_TESSDATA_GLOBS = (
    "/usr/share/tesseract-ocr/*/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


class OcrRefused(Exception):
    """The image or the language cannot be OCRed; the child itself is fine."""

    def __init__(self, kind: RefusalKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


@functools.cache  # asked per image; the folders do not move while a child lives
def find_tessdata(configured: str | None = None) -> str | None:
    """The language-data folder: the configured one, TESSDATA_PREFIX, or the distribution's."""
    candidates = [configured, os.environ.get("TESSDATA_PREFIX")]
    for pattern in _TESSDATA_GLOBS:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))  # newest version first
    for candidate in candidates:
        if candidate and any(Path(candidate).glob("*.traineddata")):
            return candidate.rstrip("/") + "/"
    return None


class Engine:
    """Initialised tesseract APIs by (language, page segmentation mode), least recent out."""

    def __init__(self) -> None:
        import tesserocr

        self._tesserocr = tesserocr
        self._apis: OrderedDict[tuple[str, int, str], Any] = OrderedDict()

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

    def recognise(self, path: str, lang: str, psm: int, tessdata: str | None) -> str:
        api = self.api(lang, psm, tessdata)
        try:
            # Leptonica reads the file as the CLI would (resolution from the file included).
            api.SetImageFile(path)
        except Exception:  # RuntimeError, or Pillow's error where tesserocr asked Pillow
            api.SetImage(_decode_with_pillow(path))
        try:
            return str(api.GetUTF8Text())
        finally:
            api.Clear()  # drop the page's image and results now, not when the next one comes


def _decode_with_pillow(path: str) -> Any:
    """The bundled leptonica reads PNG, JPEG, TIFF, WebP, BMP and PNM; Pillow covers the rest
    the CLI read (GIF, JPEG 2000). An image neither can read is refused."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.copy()
    except Exception as exc:
        raise OcrRefused("image", f"{type(exc).__name__}: {exc}") from exc


def answer(engine: Engine, payload: bytes) -> tuple[OcrRecord, bool]:
    """One job's answer line and whether the child may go on."""
    try:
        job = json.loads(payload)
        text = engine.recognise(job["path"], job["lang"], int(job["psm"]), job.get("tessdata"))
    except OcrRefused as exc:
        print(f"OCR refused ({exc.kind}): {exc.detail}", file=sys.stderr)
        return ErrorRecord(type="error", kind=exc.kind), True
    except Exception:  # unexpected: reported, and this process does not take another image
        traceback.print_exc()
        return ErrorRecord(type="error", kind="failed"), False
    return TextRecord(type="text", text=text), True


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
