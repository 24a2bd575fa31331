"""Run the user service: `python -m services.user`."""

from services.common.config import load_settings
from services.common.server import run_service
from services.user.config import UserSettings
from services.user.server import build_server


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(UserSettings)
    run_service("user", settings, lambda: build_server(settings))


if __name__ == "__main__":
    main()
