"""The draft page in a real browser: `counterpick up` on a fresh state directory, the local
OpenID provider in Steam's place, and headless Chromium (tests/browser/draft.mjs).

Nothing is imported beforehand: the page must show suggestions from the first-start seed that
`up` loads by itself (the bundled 2026-07 matches; the room asks for the current patch, which
borrows from 7.41 and says so). Two captains sign in as different Steam accounts, one creates a
Captains Mode room and the other joins it through the invite link; they ban and pick from the
suggestions while a signed-in spectator and an OBS overlay opened from the room's overlay link
(a read-only key, no sign-in) watch the picks appear. Screenshots go to $BROWSER_ARTIFACTS_DIR
(default tests/artifacts/); $DOCS_SCREENSHOT also writes the page with live suggestions there
(docs/draft-page.png is made that way).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from services.cli.up import SERVICES
from tests.conftest import REDIS_URL, REPO_ROOT, free_port
from tests.openid_provider import OpenIdProvider

pytestmark = pytest.mark.e2e
BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
STEAMID = 76561198000031337


class SteamInTheBrowser:
    """The local provider as a browser meets it: GET checkid_setup signs the player in at once
    and redirects back; POST check_authentication is the provider's own answer."""

    def __init__(self, provider: OpenIdProvider) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = f"http://127.0.0.1:{outer.port}{self.path}"
                # Each browser context is its own Steam user: a cookie on this origin says which.
                cookies = SimpleCookie(self.headers.get("Cookie", ""))
                steamid = int(cookies["steamid"].value) if "steamid" in cookies else STEAMID
                params = provider.assert_login(url, steamid)
                # Signed as coming from this endpoint, the one auth is configured with.
                params = provider.resign(params | {"openid.op_endpoint": outer.endpoint})
                self.send_response(302)
                self.send_header("Location", params["openid.return_to"] + "&" + urlencode(params))
                self.end_headers()

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                valid = provider.verify(form)
                body = f"ns:http://specs.openid.net/auth/2.0\nis_valid:{str(valid).lower()}\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/openid/login"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def steam() -> Iterator[SteamInTheBrowser]:
    provider = OpenIdProvider().start()
    steam = SteamInTheBrowser(provider)
    yield steam
    steam.stop()
    provider.stop()


@pytest.fixture(scope="module")
def edge_url(tmp_path_factory: pytest.TempPathFactory, steam: SteamInTheBrowser) -> Iterator[str]:
    state_dir = tmp_path_factory.mktemp("browser-mesh")
    edge_port = free_port()
    edge = f"http://127.0.0.1:{edge_port}"
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "WAREHOUSE_DSN"}
    }
    env |= {
        "OPENDOTA_BASE_URL": f"http://127.0.0.1:{free_port()}/api",  # never the internet
        "REDIS_URL": REDIS_URL,
        "STEAM_OPENID_ENDPOINT": steam.endpoint,
        "AUTH_ALLOWED_RETURN_ORIGINS": edge,
    }
    argv = [sys.executable, "-m", "services.cli", "up", "--state-dir", str(state_dir)]
    argv += ["--edge-port", str(edge_port), "--kafka-port", str(free_port())]
    ports = {name: free_port() for name in SERVICES}
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    else:
        pytest.fail("counterpick up exited before it was ready:\n" + "".join(banner))
    # Keep reading what up prints (seeding progress, logs): a full pipe would stall it.
    threading.Thread(target=banner.extend, args=(process.stdout,), daemon=True).start()
    try:
        yield edge
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_sign_in_draft_and_spectate_in_chromium(edge_url: str, steam: SteamInTheBrowser) -> None:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"Chromium not found at {CHROMIUM}: scripts/test.sh installs Debian's package")
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is missing: scripts/test.sh runs npm ci in tests/browser")
    artifacts = Path(os.environ.get("BROWSER_ARTIFACTS_DIR", REPO_ROOT / "tests" / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        EDGE_URL=edge_url,
        OPENID_URL=f"http://127.0.0.1:{steam.port}",
        ARTIFACTS_DIR=str(artifacts),
        CHROMIUM=CHROMIUM,
    )
    node = shutil.which("node")
    assert node is not None, "node is needed to drive Chromium"
    result = subprocess.run(
        [node, str(BROWSER_DIR / "draft.mjs")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    seen: dict[str, Any] = json.loads(lines[-1]) if lines else {"ok": False, "error": "none"}
    assert result.returncode == 0, f"{seen}\n--- browser log ---\n{result.stderr[-6000:]}"
    assert seen["ok"]
    assert len({round(w, 4) for w in seen["win"]}) > 1, seen
    assert seen["joined"] == "DIRE", seen
    assert "7.41" in seen["note"], seen  # the current patch borrowed the seed's, and said so
    shots = ("01-signed-in", "02-room", "03-draft-with-suggestions", "04-spectator")
    for name in (*shots, "05-overlay", "06-second-captain"):
        assert (artifacts / f"{name}.png").stat().st_size > 1000
