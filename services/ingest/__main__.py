"""Run the ingest service: `python -m services.ingest`."""

from services.common.config import load_settings
from services.common.server import run_service
from services.ingest.config import IngestSettings
from services.ingest.server import build_server


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(IngestSettings)
    run_service("ingest", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
