"""The edge's token check and JWKS endpoint against the real auth service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import EdgeSettings
from services.auth.config import AuthSettings
from services.auth.keys import KeyRing
from services.auth.server import build_server
from services.auth.tokens import issue_access_token
from tests.conftest import free_port


@pytest.fixture
async def auth_port(tmp_path: Path, postgres_dsn: str, redis_url: str) -> AsyncIterator[int]:
    server = build_server(
        AuthSettings.model_validate(
            {
                "port": 0,
                "postgres_dsn": postgres_dsn,
                "redis_url": redis_url,
                "auth_keys_dir": str(tmp_path / "keys"),
            }
        )
    )
    port = await server.start()
    yield port
    await server.stop(0)


def token(ring: KeyRing, now: int, **overrides: object) -> str:
    arguments: dict[str, object] = {
        "issuer": "counterpick-auth",
        "audience": "counterpick",
        "user_id": "u-7",
        "roles": ["user"],
        "now": now,
        "steamid64": 76561197960265728 + 7,
    }
    arguments.update(overrides)
    return issue_access_token(ring, **arguments).token  # type: ignore[arg-type]


async def test_jwks_and_the_token_dependency(auth_port: int, tmp_path: Path) -> None:
    ring = KeyRing.load(tmp_path / "keys", create=False)  # the keys the auth service signs with
    settings = EdgeSettings.model_validate({"auth_addr": f"127.0.0.1:{auth_port}"})
    app = create_app(settings)
    # In this test's event loop (the auth server runs in it too), not TestClient's own thread.
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as edge,
    ):
        jwks = await edge.get("/.well-known/jwks.json")
        assert jwks.status_code == 200
        assert [key["kid"] for key in jwks.json()["keys"]] == [ring.signing_key.kid]
        assert "max-age" in jwks.headers["cache-control"]

        anonymous = await edge.get("/auth/me")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Bearer")
        now = int(time.time())
        me = await edge.get("/auth/me", headers={"Authorization": f"Bearer {token(ring, now)}"})
        assert me.status_code == 200
        assert me.json()["account_id"] == 7
        expired = await edge.get(
            "/auth/me", headers={"Authorization": f"Bearer {token(ring, now - 7200)}"}
        )
        assert expired.status_code == 401
        assert 'error="invalid_token"' in expired.headers["www-authenticate"]
        for bad in (
            "Bearer garbage",
            "Basic dXNlcjpwYXNz",
            f"Bearer {token(ring, now, audience='x')}",
        ):
            assert (await edge.get("/auth/me", headers={"Authorization": bad})).status_code == 401


def test_auth_down_is_503_not_401() -> None:
    settings = EdgeSettings.model_validate(
        {"auth_addr": f"127.0.0.1:{free_port()}", "grpc_timeout_seconds": 0.5}
    )
    with TestClient(create_app(settings)) as edge:
        assert edge.get("/.well-known/jwks.json").status_code == 503
        response = edge.get("/auth/me", headers={"Authorization": "Bearer a.b.c"})
        assert response.status_code in (401, 503)
