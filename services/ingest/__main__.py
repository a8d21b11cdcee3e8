"""python -m services.ingest"""

from services.ingest.app import create_app
from shared.service import run_service
from shared.settings import get_settings

if __name__ == "__main__":
    settings = get_settings()
    run_service(create_app(settings), settings.ingest_port, settings)
