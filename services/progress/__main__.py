"""python -m services.progress"""

from services.progress.app import create_app
from shared.service import run_service
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    run_service(create_app(settings), settings.progress_port, settings)


if __name__ == "__main__":
    main()
