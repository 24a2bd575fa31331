"""A local OpenID 2.0 provider that speaks Steam's dialect, for tests (no internet).

`assert_login` plays the browser's trip through the provider: it answers a checkid_setup URL with
the positive assertion the provider would redirect back with, signed (HMAC-SHA256 over the
`openid.signed` fields, with a secret only the provider knows). `check_authentication` POSTs are
answered `is_valid:true` only when the signature matches and the nonce was not checked before, as
a stateless-mode OpenID provider does. Tests then tamper with, replay or forge assertions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

OPENID_NS = "http://specs.openid.net/auth/2.0"
SIGNED = "signed,op_endpoint,claimed_id,identity,return_to,response_nonce,assoc_handle"


class OpenIdProvider:
    """Runs on a free loopback port; `endpoint` is what the auth service is configured with."""

    def __init__(self) -> None:
        self._secret = secrets.token_bytes(32)
        self._checked_nonces: set[str] = set()
        self.check_requests = 0
        self.answer_invalid = False
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                provider.check_requests += 1
                valid = provider.verify(form)
                body = f"ns:{OPENID_NS}\nis_valid:{'true' if valid else 'false'}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}/openid/login"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> OpenIdProvider:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _signature(self, params: dict[str, str]) -> str:
        fields = params.get("openid.signed", "").split(",")
        text = "".join(f"{name}:{params.get('openid.' + name, '')}\n" for name in fields)
        digest = hmac.new(self._secret, text.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def verify(self, form: dict[str, str]) -> bool:
        """What check_authentication answers."""
        if self.answer_invalid or form.get("openid.mode") != "check_authentication":
            return False
        params = dict(form, **{"openid.mode": "id_res"})
        if not hmac.compare_digest(self._signature(params), form.get("openid.sig", "")):
            return False
        nonce = form.get("openid.response_nonce", "")
        if nonce in self._checked_nonces:
            return False  # a provider confirms each assertion once
        self._checked_nonces.add(nonce)
        return True

    def assert_login(
        self, redirect_url: str, steamid64: int, *, now: datetime | None = None
    ) -> dict[str, str]:
        """The openid.* parameters the browser comes back with after logging in."""
        query = {key: values[0] for key, values in parse_qs(urlsplit(redirect_url).query).items()}
        assert query["openid.mode"] == "checkid_setup"
        moment = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        claimed = f"https://steamcommunity.com/openid/id/{steamid64}"
        params = {
            "openid.ns": OPENID_NS,
            "openid.mode": "id_res",
            "openid.op_endpoint": self.endpoint,
            "openid.claimed_id": claimed,
            "openid.identity": claimed,
            "openid.return_to": query["openid.return_to"],
            "openid.response_nonce": f"{moment}{secrets.token_hex(6)}",
            "openid.assoc_handle": "1234567890",
            "openid.signed": SIGNED,
        }
        params["openid.sig"] = self._signature(params)
        return params

    def resign(self, params: dict[str, str]) -> dict[str, str]:
        """Sign tampered parameters as the provider would (a provider-side forgery)."""
        return dict(params, **{"openid.sig": self._signature(params)})


@pytest.fixture(name="provider")
def running_provider() -> Iterator[OpenIdProvider]:
    """A provider serving for one test (import it into the test module to use `provider`)."""
    running = OpenIdProvider().start()
    yield running
    running.stop()
