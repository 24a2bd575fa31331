"""Run the edge: `python -m gateway`."""

import uvicorn

from gateway.app import create_app
from gateway.config import EdgeSettings
from services.common.config import load_settings
from services.common.telemetry import setup_telemetry, shutdown_telemetry


def main() -> None:
    """Read settings and serve HTTP until SIGTERM (uvicorn drains connections on the way out)."""
    settings = load_settings(EdgeSettings)
    setup_telemetry(settings, "edge")
    try:
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_graceful_shutdown=5,
        )
    finally:
        shutdown_telemetry()


if __name__ == "__main__":
    main()
