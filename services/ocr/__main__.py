"""`python -m services.ocr`: the ocr service on settings.ocr_port."""

from services.ocr.app import create_app
from shared.service import run_service
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    run_service(create_app(settings), settings.ocr_port, settings)
