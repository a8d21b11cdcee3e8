"""`python -m services.analyzer`: the analyzer consumer with its ops HTTP endpoints."""

from __future__ import annotations

from services.analyzer.handler import setup
from shared.service import create_service_app, run_service
from shared.settings import get_settings

app = create_service_app("analyzer", setup)

if __name__ == "__main__":
    run_service(app, get_settings().analyzer_port)
