"""Steam sign-in in the browser through the edge, against the real auth and user services and the
local OpenID provider: cookies, CSRF refusals, refresh, logout, and no token in any log line."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from gateway.app import create_app
from gateway.config import EdgeSettings
from gateway.web_auth import CSRF_COOKIE, REFRESH_COOKIE, STATE_COOKIE
from services.auth.config import AuthSettings
from services.auth.server import build_server as build_auth
from services.user.config import UserSettings
from services.user.server import build_server as build_user
from tests.conftest import free_port
from tests.openid_provider import OpenIdProvider, running_provider  # noqa: F401 - the fixture

EDGE = "http://localhost:8000"  # an origin auth allows return_to on by default
STEAMID = 76561198000007777


@dataclass
class Edge:
    client: httpx.AsyncClient
    provider: OpenIdProvider


@pytest.fixture
async def edge(
    tmp_path: Path, postgres_dsn: str, redis_url: str, provider: OpenIdProvider
) -> AsyncIterator[Edge]:
    auth_port, user_port = free_port(), free_port()
    schema = f"user_web_{uuid.uuid4().hex[:8]}"
    common = {"postgres_dsn": postgres_dsn, "redis_url": redis_url}
    user = build_user(
        UserSettings.model_validate(
            common
            | {
                "port": user_port,
                "auth_addr": f"127.0.0.1:{auth_port}",
                "user_postgres_schema": schema,
                "rate_limit_key_prefix": f"web:{uuid.uuid4().hex[:8]}",
            }
        )
    )
    auth = build_auth(
        AuthSettings.model_validate(
            common
            | {
                "port": auth_port,
                "user_addr": f"127.0.0.1:{user_port}",
                "auth_keys_dir": str(tmp_path / "keys"),
                "steam_openid_endpoint": provider.endpoint,
            }
        )
    )
    await user.start()
    await auth.start()
    settings = EdgeSettings.model_validate(
        {
            "auth_addr": f"127.0.0.1:{auth_port}",
            "user_addr": f"127.0.0.1:{user_port}",
            "redis_url": redis_url,
            "edge_rate_limit_key_prefix": f"web:{uuid.uuid4().hex[:8]}",
        }
    )
    app = create_app(settings)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=EDGE) as client,
        ):
            yield Edge(client, provider)
    finally:
        await auth.stop(0)
        await user.stop(0)
        connection = await asyncpg.connect(postgres_dsn)
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await connection.close()


def set_cookie_header(response: httpx.Response, name: str) -> str:
    """The Set-Cookie line of one cookie, lower-cased for attribute checks."""
    lines = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    return next(line for line in lines if line.startswith(name + "=")).lower()


async def sign_in(edge: Edge) -> httpx.Response:
    """The browser's trip: the edge -> Steam (the local provider) -> the edge's callback."""
    login = await edge.client.get("/auth/steam/login")
    assert login.status_code == 303
    assert login.headers["location"].startswith(edge.provider.endpoint)
    state = set_cookie_header(login, STATE_COOKIE)
    assert "httponly" in state
    assert "samesite=lax" in state
    assert "path=/auth/steam" in state
    assert "secure" not in state  # plain http on localhost: a browser would drop a Secure cookie
    params = edge.provider.assert_login(login.headers["location"], STEAMID)
    return_to = params["openid.return_to"]
    assert return_to.startswith(EDGE + "/auth/steam/callback?")
    return await edge.client.get(return_to + "&" + urlencode(params))


def csrf_headers(edge: Edge, **extra: str) -> dict[str, str]:
    return {"X-CSRF-Token": edge.client.cookies.get(CSRF_COOKIE) or "", **extra}


async def test_sign_in_refresh_and_logout_keep_tokens_out_of_urls_and_logs(
    edge: Edge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    callback = await sign_in(edge)
    assert callback.status_code == 303
    assert callback.headers["location"] == "/"  # no token in the URL the page lands on
    refresh_cookie = set_cookie_header(callback, REFRESH_COOKIE)
    assert "httponly" in refresh_cookie
    assert "samesite=strict" in refresh_cookie
    assert "path=/auth" in refresh_cookie
    assert "httponly" not in set_cookie_header(callback, CSRF_COOKIE)  # the page echoes it
    refresh_token = edge.client.cookies.get(REFRESH_COOKIE)
    assert refresh_token

    same_origin = {"Origin": EDGE, "Sec-Fetch-Site": "same-origin"}
    refreshed = await edge.client.post("/auth/refresh", headers=csrf_headers(edge, **same_origin))
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.headers["cache-control"] == "no-store"
    access = refreshed.json()["access_token"]
    me = await edge.client.get("/auth/me", headers={"Authorization": f"Bearer {access}"})
    assert me.status_code == 200
    assert me.json()["account_id"] == STEAMID - 76561197960265728
    # The refresh token rotated; the old one is used up.
    assert edge.client.cookies.get(REFRESH_COOKIE) != refresh_token

    logout = await edge.client.post("/auth/logout", headers=csrf_headers(edge, **same_origin))
    assert logout.status_code == 200
    assert logout.json()["revoked"] == 1
    assert edge.client.cookies.get(REFRESH_COOKIE) is None
    after = await edge.client.post("/auth/refresh", headers=csrf_headers(edge, **same_origin))
    assert after.status_code in (401, 403)  # signed out: no session, no CSRF cookie

    # Every line the edge and the services logged (httpx and httpcore are this test's browser).
    logged = "\n".join(
        f"{r.getMessage()} {r.__dict__.get('fields', '')}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    assert "signed in through Steam" in logged
    for secret in (refresh_token, access, callback.request.url.params["state"]):
        assert secret not in logged
    assert "openid.sig" not in logged


async def test_an_overlay_links_read_only_key_is_traded_for_a_token(edge: Edge) -> None:
    """The OBS overlay link carries a read-only API key (in its fragment); the overlay page
    trades it at POST /auth/api-key for an access token with the key's scopes. A forged or
    revoked key is 401, a body without a key is 400, and nothing is logged in."""
    await sign_in(edge)
    same_origin = {"Origin": EDGE, "Sec-Fetch-Site": "same-origin"}
    refreshed = await edge.client.post("/auth/refresh", headers=csrf_headers(edge, **same_origin))
    access = refreshed.json()["access_token"]
    created = await edge.client.post(
        "/graphql",
        json={
            "query": 'mutation { createApiKey(name: "overlay", scopes: ["draft:read", '
            '"model:read"]) { secret apiKey { id } } }'
        },
        headers={"Authorization": f"Bearer {access}"},
    )
    assert created.status_code == 200, created.text
    key = created.json()["data"]["createApiKey"]
    overlay = httpx.AsyncClient(transport=edge.client._transport, base_url=EDGE)  # no cookies
    async with overlay:
        traded = await overlay.post("/auth/api-key", json={"api_key": key["secret"]})
        assert traded.status_code == 200, traded.text
        assert traded.headers["cache-control"] == "no-store"
        assert sorted(traded.json()["scopes"]) == ["draft:read", "model:read"]
        assert "set-cookie" not in traded.headers
        me = await overlay.get(
            "/auth/me", headers={"Authorization": f"Bearer {traded.json()['access_token']}"}
        )
        assert me.json()["account_id"] == STEAMID - 76561197960265728

        forged = await overlay.post("/auth/api-key", json={"api_key": key["secret"][:-4] + "AAAA"})
        assert forged.status_code == 401
        for body in (b"{}", b"not json", b'{"api_key": 7}', b"[]"):
            refused = await overlay.post("/auth/api-key", content=body)
            assert refused.status_code == 400, body
        revoked = await edge.client.post(
            "/graphql",
            json={"query": f'mutation {{ revokeApiKey(id: "{key["apiKey"]["id"]}") {{ id }} }}'},
            headers={"Authorization": f"Bearer {access}"},
        )
        assert revoked.status_code == 200, revoked.text
        after = await overlay.post("/auth/api-key", json={"api_key": key["secret"]})
        assert after.status_code == 401


async def test_cross_site_refresh_and_logout_are_refused(edge: Edge) -> None:
    await sign_in(edge)
    cases = {
        "no CSRF header": {"Origin": EDGE},
        "wrong CSRF header": {"X-CSRF-Token": "guess", "Origin": EDGE},
        "another origin": csrf_headers(edge, Origin="https://evil.example"),
        "a cross-site fetch": csrf_headers(edge, **{"Sec-Fetch-Site": "cross-site"}),
        "a same-site sibling": csrf_headers(edge, **{"Sec-Fetch-Site": "same-site"}),
    }
    for case, headers in cases.items():
        for path in ("/auth/refresh", "/auth/logout"):
            response = await edge.client.post(path, headers=headers)
            assert response.status_code == 403, (case, path, response.text)
    # The session survived every refused attempt.
    accepted = await edge.client.post("/auth/refresh", headers=csrf_headers(edge, Origin=EDGE))
    assert accepted.status_code == 200


async def test_a_callback_not_started_by_this_browser_signs_nobody_in(edge: Edge) -> None:
    login = await edge.client.get("/auth/steam/login")
    params = edge.provider.assert_login(login.headers["location"], STEAMID)
    # Another browser (an attacker's login-CSRF link) has no state cookie, or someone else's.
    edge.client.cookies.set(STATE_COOKIE, "someone-elses-state", path="/auth/steam")
    forged = await edge.client.get(params["openid.return_to"] + "&" + urlencode(params))
    assert forged.status_code == 303
    assert forged.headers["location"] == "/?login=failed"
    assert edge.client.cookies.get(REFRESH_COOKIE) is None
    assert edge.provider.check_requests == 0  # never reached Steam's confirmation

    # A tampered assertion with the right state: auth refuses it and nothing is set.
    login = await edge.client.get("/auth/steam/login")
    params = edge.provider.assert_login(login.headers["location"], STEAMID)
    params["openid.claimed_id"] = "https://steamcommunity.com/openid/id/76561198000000001"
    tampered = await edge.client.get(params["openid.return_to"] + "&" + urlencode(params))
    assert tampered.headers["location"] == "/?login=failed"
    assert edge.client.cookies.get(REFRESH_COOKIE) is None


async def test_refresh_and_logout_without_a_session() -> None:
    settings = EdgeSettings.model_validate(
        {"auth_addr": f"127.0.0.1:{free_port()}", "edge_rate_limit_enabled": False}
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=EDGE) as client,
    ):
        client.cookies.set(CSRF_COOKIE, "c")
        refresh = await client.post("/auth/refresh", headers={"X-CSRF-Token": "c"})
        assert refresh.status_code == 401
        logout = await client.post("/auth/logout", headers={"X-CSRF-Token": "c"})
        assert logout.status_code == 200
        assert logout.json() == {"revoked": 0}
        # The overlay's key exchange with auth down: 503, not a 500.
        traded = await client.post("/auth/api-key", json={"api_key": "cpk_anything"})
        assert traded.status_code == 503
