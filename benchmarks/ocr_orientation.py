"""What turning rotated scans upright costs (docs/decisions/1010-ocr-languages.md).

The OCR child's own code (services/ocr/engine.py) on the corpus scans, upright and turned 90
and 180 degrees, single-threaded, in CPU seconds per page: a reading without orientation
handling, the same with the quick check (orientation detection only for a low-confidence
reading), and orientation detection alone (what running it on every page would add). Quality:
CER against the ground truth where the corpus has one.

    python -m benchmarks.ocr_orientation
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from PIL import Image

from benchmarks.common import corpus_files
from services.ocr.engine import DEFAULT_PSM, Engine, Recognised
from tests.quality import cer

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
ORIENT_BELOW = 60.0


COLUMNS = (
    "image",
    "turned",
    "plain s",
    "with check s",
    "OSD alone s",
    "turned back",
    "CER plain",
    "CER checked",
)


def turned_copy(source: Path, degrees: int, folder: Path) -> Path:
    dest = folder / f"{source.stem}-{degrees}.png"
    with Image.open(source) as image:
        image.seek(0)
        dpi = image.info.get("dpi", (300, 300))
        image.rotate(degrees, expand=True).save(dest, dpi=dpi)
    return dest


def timed_reading(engine: Engine, path: str, below: float | None) -> tuple[float, Recognised]:
    started = time.process_time()
    reading = engine.recognise(path, "eng", DEFAULT_PSM, None, below)
    return time.process_time() - started, reading


def row(engine: Engine, source: Path, degrees: int, folder: Path, truth: str | None) -> str:
    path = str(turned_copy(source, degrees, folder))
    plain_s, plain = timed_reading(engine, path, None)
    checked_s, checked = timed_reading(engine, path, ORIENT_BELOW)
    started = time.process_time()
    engine.orientation(path, None)
    osd_s = time.process_time() - started
    cers = [f"{cer(truth, r.text):.3f}" if truth else "-" for r in (plain, checked)]
    cells = [source.name, degrees, f"{plain_s:.2f}", f"{checked_s:.2f}", f"{osd_s:.2f}"]
    return "| " + " | ".join(str(c) for c in [*cells, checked.rotated, *cers]) + " |"


def main() -> None:
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")
    engine = Engine()
    engine.api("eng", DEFAULT_PSM, None)  # models loaded before timing, as in a warm child
    engine.osd_api(None)
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for source in corpus_files("pdf_scanned", IMAGE_SUFFIXES):
            ref = source.with_name(source.stem + ".expected.txt")
            truth = ref.read_text(errors="replace") if ref.exists() else None
            for degrees in (0, 90, 180):
                print(row(engine, source, degrees, Path(tmp), truth), flush=True)


if __name__ == "__main__":
    main()
