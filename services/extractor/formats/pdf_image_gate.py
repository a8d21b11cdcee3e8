"""Which embedded images of a text PDF are worth OCR, and at what size.

With the default options every large enough image a text page draws was OCRed: photographs,
paintings and icons too, where tesseract finds nothing (on the corpus, 10 of the 16 distinct
images). Each cost a PNG blob, a message on the bus, a tesseract run and a page.ocred. Now an
image crosses the bus only when tesseract's page layout analysis, run on a downscaled grey copy,
finds a text block in it (layout analysis needs no language data and recognises nothing). A
flat image (a rule, a fill) and a continuous-tone one (a photograph) are refused before that,
by the grey histogram, at a fraction of layout analysis' cost. An image larger than a page at
the OCR resolution is downscaled to that size: tesseract's time grows with the pixels, its
accuracy does not.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The layout copy: text that tesseract finds at 1024 px on the long side it also finds at full
# size (measured on the corpus images: the same blocks at full size, 1600 and 1024 px).
LAYOUT_SIDE = 1024
# Standard deviation of the grey levels below which an image is flat: no stroke of text in it.
FLAT_STDDEV = 8.0
# More of the pixels than this in the middle of the grey range: continuous tone, a picture.
PHOTO_MIDTONE_SHARE = 0.35
# An A4 page, in inches: an image is never OCRed at more pixels than such a page at the OCR dpi.
PAGE_INCHES = (8.27, 11.69)

TextBlocks = Callable[[Any], int]


def grey(image: Any) -> Any:
    """An 8-bit grey copy; transparency is laid on white (as a PDF viewer shows it on paper)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, "white")
        paper.alpha_composite(rgba)
        image = paper
    return image.convert("L")


def layout_copy(image: Any, side: int = LAYOUT_SIDE) -> Any:
    """The grey copy layout analysis looks at: at most `side` pixels on its long side."""
    copy = grey(image)
    if max(copy.size) > side:
        copy.thumbnail((side, side))
    return copy


def midtone_share(copy: Any) -> float:
    """Share of the pixels in the middle half of the image's own grey range (its 2nd to 98th
    percentile): text, even anti-aliased or scanned, is paper and ink with few pixels between
    (corpus diagrams and scans: 0.00-0.07, a watermark banner 0.14); a photograph or painting
    is mostly between (0.40-0.62; some dark ones 0.12-0.15, which layout analysis refuses)."""
    counts: list[int] = copy.histogram()[:256]
    total = sum(counts)
    if not total:
        return 0.0
    cumulative = list(itertools.accumulate(counts))
    low = bisect.bisect_left(cumulative, 0.02 * total)
    high = bisect.bisect_left(cumulative, 0.98 * total)
    quarter = (high - low) // 4
    return sum(counts[low + quarter : high - quarter + 1]) / total


def is_flat(copy: Any) -> bool:
    """Nearly one grey level all over: a fill, a rule, a faint gradient."""
    from PIL import ImageStat

    return float(ImageStat.Stat(copy).stddev[0]) < FLAT_STDDEV


def tesseract_text_blocks(copy: Any) -> int:
    """How many text blocks (flowing, heading, caption, pull-out, vertical text, or table)
    tesseract's layout analysis finds in the grey copy."""
    api = _layout_api()
    if api is None:
        return 1  # no tesseract here: every image is OCRed, as before the gate
    from tesserocr import RIL

    api.SetImage(copy)
    try:
        found = 0
        blocks = api.AnalyseLayout()
        while blocks is not None:
            found += blocks.BlockType() in _TEXT_BLOCK_TYPES
            if not blocks.Next(RIL.BLOCK):
                break
        return found
    finally:
        api.Clear()


def likely_holds_text(image: Any, text_blocks: TextBlocks = tesseract_text_blocks) -> bool:
    """Whether OCR would likely find text in the image, on its downscaled grey copy: it is
    not flat, not continuous tone (a photograph), and layout analysis (`text_blocks`) finds
    at least one text block. The two cheap tests spare layout analysis most pictures."""
    copy = layout_copy(image)
    if is_flat(copy) or midtone_share(copy) > PHOTO_MIDTONE_SHARE:
        return False
    return text_blocks(copy) > 0


def ocr_max_pixels(dpi: int) -> int:
    """The most pixels an embedded image is OCRed at: an A4 page at `dpi`."""
    return int(PAGE_INCHES[0] * dpi * PAGE_INCHES[1] * dpi)


def ocr_copy(image: Any, max_pixels: int) -> Any:
    """The image, downscaled (aspect kept) when it has more than `max_pixels` pixels."""
    from PIL import Image

    if image.width * image.height <= max_pixels:
        return image
    scale = math.sqrt(max_pixels / (image.width * image.height))
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


_api: Any = None
_api_failed = False
_TEXT_BLOCK_TYPES: frozenset[int] = frozenset()


def _layout_api() -> Any:
    """One tesseract initialised for layout analysis only (no language data), per process;
    None when tesseract cannot be loaded (said once)."""
    global _api, _api_failed, _TEXT_BLOCK_TYPES
    if _api is None and not _api_failed:
        # Single-threaded, as the OCR service runs it: the children are the parallelism.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        try:
            from tesserocr import PSM, PT, PyTessBaseAPI

            api = PyTessBaseAPI(init=False)
            api.InitForAnalysePage()
            api.SetPageSegMode(PSM.AUTO_ONLY)
        except (ImportError, RuntimeError) as exc:
            _api_failed = True
            log.warning("no layout analysis (%s): every embedded image is OCRed", exc)
            return None
        _TEXT_BLOCK_TYPES = frozenset(
            {
                PT.FLOWING_TEXT,
                PT.HEADING_TEXT,
                PT.PULLOUT_TEXT,
                PT.VERTICAL_TEXT,
                PT.CAPTION_TEXT,
                PT.TABLE,
            }
        )
        _api = api
    return _api
