"""Prometheus metrics of the OCR service."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OCR_PAGE_SECONDS = Histogram(
    "docpipe_ocr_page_seconds",
    "Tesseract time spent on one page (all its OCRed images)",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)
IMAGES_OCRED = Counter("docpipe_images_ocred_total", "Images run through tesseract")
IMAGES_ROTATED = Counter(
    "docpipe_ocr_images_rotated_total",
    "Images orientation detection found rotated and OCR read turned upright",
)
