"""`python -m services.ocr`: the OCR consumer with its ops HTTP endpoints."""

from __future__ import annotations

from services.ocr.handler import setup
from shared.service import create_service_app, run_service
from shared.settings import get_settings

app = create_service_app("ocr", setup)

if __name__ == "__main__":
    run_service(app, get_settings().ocr_port)
