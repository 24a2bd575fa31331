"""A local HTTP server replaying real recorded API responses, with scriptable faults.

Routes map to files in the data directory; a test can queue faults per path (429 with
Retry-After, 5xx, a slow answer, truncated JSON, extra headers). Every request is recorded.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse


@dataclass
class Fault:
    """One scripted answer instead of the recorded file."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # None: the recorded file (possibly truncated)
    delay_seconds: float = 0.0
    truncate_to: int | None = None


@dataclass
class Request:
    """A request the server received."""

    path: str
    query: dict[str, list[str]]


class ReplayServer:
    """Serves `routes` (path -> file) from `data_dir` on a free loopback port."""

    def __init__(self, data_dir: Path, routes: dict[str, Path]) -> None:
        self.data_dir = data_dir
        self.routes = routes
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.requests: list[Request] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def queue(self, path: str, *faults: Fault) -> None:
        """Answer the next requests to `path` with these faults, in order."""
        self.faults[path].extend(faults)

    def requests_to(self, path: str) -> list[Request]:
        """Requests received for one path."""
        return [r for r in self.requests if r.path == path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                url = urlparse(self.path)
                server.requests.append(Request(url.path, parse_qs(url.query)))
                fault = server.faults[url.path].popleft() if server.faults[url.path] else Fault()
                if fault.delay_seconds:
                    time.sleep(fault.delay_seconds)
                body = fault.body
                if body is None:
                    route = server.routes.get(url.path)
                    if route is None:
                        self._answer(404, b'{"error": "Not Found"}', fault.headers)
                        return
                    body = (server.data_dir / route).read_bytes()
                if fault.truncate_to is not None:
                    body = body[: fault.truncate_to]
                self._answer(fault.status, body, fault.headers)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

    def __enter__(self) -> ReplayServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def replay(data_dir: Path, routes: dict[str, Path]) -> Iterator[ReplayServer]:
    """Fixture body: a started server, shut down afterwards."""
    with ReplayServer(data_dir, routes) as server:
        yield server
