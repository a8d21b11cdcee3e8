"""`python -m services.extractor`: the extractor service on settings.extractor_port."""

from services.extractor.app import create_app
from shared.service import run_service
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    run_service(create_app(settings), settings.extractor_port, settings)
