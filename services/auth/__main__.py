"""Run the auth service: `python -m services.auth`."""

from services.auth.config import AuthSettings
from services.auth.server import build_server
from services.common.config import load_settings
from services.common.server import run_service


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(AuthSettings)
    run_service("auth", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
