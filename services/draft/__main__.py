"""Run the draft service: `python -m services.draft`."""

from services.common.config import load_settings
from services.common.server import run_service
from services.draft.config import DraftSettings
from services.draft.server import build_server


def main() -> None:
    """Read settings, then serve until SIGTERM."""
    settings = load_settings(DraftSettings)
    run_service("draft", settings, lambda: build_server(settings, freeze_gc=True))


if __name__ == "__main__":
    main()
