"""Run the etl service: `python -m services.etl`.

Like every service it serves until SIGTERM; unlike the others it has a background consumer whose
unexpected death must end the process with a non-zero code (STYLE R11), so that its supervisor
(`counterpick up`, compose's restart policy) restarts it. The shared `run_service` exits 0 on a
signal only, hence this entry point of its own.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import start_http_server

from services.common.config import load_settings
from services.common.errors import CounterpickError
from services.common.telemetry import setup_telemetry, shutdown_telemetry
from services.etl.config import EtlSettings
from services.etl.server import build_server_and_runtime

log = logging.getLogger(__name__)
EXIT_CONSUMER_FAILED = 70  # EX_SOFTWARE


async def serve(settings: EtlSettings) -> int:
    """Serve until SIGTERM/SIGINT (0) or until the consumer fails (EXIT_CONSUMER_FAILED),
    stopping gracefully either way."""
    server, runtime = build_server_and_runtime(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_requested.set)
    await server.start()
    waits = [
        asyncio.ensure_future(stop_requested.wait()),
        asyncio.ensure_future(runtime.failed.wait()),
    ]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for wait in waits:
        wait.cancel()
    await server.stop()
    return EXIT_CONSUMER_FAILED if runtime.failure is not None else 0


def main() -> None:
    """Read settings, then serve; exits non-zero when the consumer failed or a store is down."""
    settings = load_settings(EtlSettings)
    setup_telemetry(settings, "etl")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.host)
    try:
        code = asyncio.run(serve(settings))
    except CounterpickError as error:
        # A dependency that never came up: say which, and exit non-zero so a supervisor restarts us.
        log.error("cannot start etl: %s", error.message, extra={"fields": error.metadata})
        raise SystemExit(1) from None
    finally:
        shutdown_telemetry()
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
