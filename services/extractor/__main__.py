"""`python -m services.extractor`: the extractor service on settings.extractor_port."""

from services.extractor.service import setup
from shared.service import create_service_app, run_service
from shared.settings import get_settings

app = create_service_app("extractor", setup)

if __name__ == "__main__":
    run_service(app, get_settings().extractor_port)
