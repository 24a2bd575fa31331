"""Run the model service: `python -m services.model`."""

from services.common.config import load_settings
from services.common.server import run_service
from services.model.config import ModelSettings
from services.model.server import build_server


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(ModelSettings)
    run_service("model", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
