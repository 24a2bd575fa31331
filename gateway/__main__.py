"""Run the edge: `python -m gateway`."""

import uvicorn

from gateway import gc_policy
from gateway.app import create_app
from gateway.config import EdgeSettings
from gateway.ws_protocol import EdgeWebSocketProtocol
from services.common.config import load_settings
from services.common.telemetry import setup_telemetry, shutdown_telemetry


def main() -> None:
    """Read settings and serve HTTP until SIGTERM (uvicorn drains connections on the way out)."""
    settings = load_settings(EdgeSettings)
    setup_telemetry(settings, "edge")
    app = create_app(settings)
    # Everything imported and built so far lives as long as the process, and so do most of what
    # survives a full collection (open overlays): keep them out of the collector's generations,
    # so collections with thousands of open overlays stay short (gateway.gc_policy).
    gc_policy.install()
    try:
        uvicorn.run(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            timeout_graceful_shutdown=5,
            # The client's address for quotas and logs comes from X-Forwarded-For only when a
            # trusted proxy (EDGE_TRUSTED_PROXIES) sent it; uvicorn rewrites the ASGI client.
            proxy_headers=True,
            forwarded_allow_ips=settings.edge_trusted_proxies,
            # Overlays: no permessage-deflate, feed frames written once-built (gateway.ws_protocol).
            ws=EdgeWebSocketProtocol,
        )
    finally:
        shutdown_telemetry()


if __name__ == "__main__":
    main()
