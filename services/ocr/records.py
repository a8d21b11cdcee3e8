"""The OCR child's one answer per image (services/ocr/engine.py), a union tagged by "type".

Plain dicts in the child; the parent checks each line against these types as it crosses the
process boundary (services/ocr/tesseract.py)."""

from __future__ import annotations

from typing import Literal, NotRequired

# typing_extensions' TypedDict: pydantic validates it on Python 3.11 (typing's it refuses).
from typing_extensions import TypedDict

# Why the child gave no text: an unknown language, an unreadable image, or anything else.
RefusalKind = Literal["language", "image", "failed"]


class TextRecord(TypedDict):
    type: Literal["text"]
    text: str
    # Mean confidence (0-100) of the recognised words, and how many there were (0: None).
    confidence: NotRequired[float | None]
    words: NotRequired[int]
    # Degrees the image was turned (counter-clockwise) to read it upright: 0, 90, 180 or 270.
    rotated: NotRequired[int]


class ErrorRecord(TypedDict):
    type: Literal["error"]
    kind: RefusalKind


OcrRecord = TextRecord | ErrorRecord

FAILED = ErrorRecord(type="error", kind="failed")
