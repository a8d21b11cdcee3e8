"""`python -m services.analyzer`: the analyzer service on settings.analyzer_port."""

from services.analyzer.app import create_app
from shared.service import run_service
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    run_service(create_app(settings), settings.analyzer_port, settings)
