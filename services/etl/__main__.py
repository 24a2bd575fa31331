"""Run the etl service: `python -m services.etl`."""

from services.common.config import load_settings
from services.common.server import run_service
from services.etl.config import EtlSettings
from services.etl.server import build_server


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(EtlSettings)
    run_service("etl", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
