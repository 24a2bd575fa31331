"""The edge's own defences with its mesh down: headers, CORS, body limit, quotas, operator-only
endpoints, log hygiene and the weight of the first page load."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from gateway.config import EdgeSettings
from gateway.security import add_security
from tests.conftest import free_port

EdgeFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def make_edge(redis_url: str) -> EdgeFactory:
    """An edge whose six peers are down, with settings overridden per test."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        peers = {
            f"{name}_addr": f"127.0.0.1:{free_port()}"
            for name in ("ingest", "etl", "model", "auth", "user", "draft")
        }
        settings = EdgeSettings.model_validate(
            {
                "grpc_timeout_seconds": 0.3,
                "redis_url": redis_url,
                "edge_rate_limit_key_prefix": f"sec:{uuid.uuid4().hex[:8]}",
                **peers,
                **overrides,
            }
        )
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://localhost:8000"
            ) as client,
        ):
            yield client

    return start


async def test_security_headers_and_framing_only_for_the_overlay(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        for path in ("/", "/graphql", "/healthz", "/static/app.js"):
            response = await edge.get(path)
            csp = response.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in csp, path
            assert "script-src 'self'" in csp
            assert "'unsafe-inline'" not in csp
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["referrer-policy"] == "no-referrer"
        overlay = await edge.get("/overlay/some-draft")
        assert overlay.status_code == 200
        assert "frame-ancestors" not in overlay.headers["content-security-policy"]
        assert "x-frame-options" not in overlay.headers
        assert overlay.headers["x-content-type-options"] == "nosniff"


async def test_cors_answers_only_allowed_origins(make_edge: EdgeFactory) -> None:
    async with make_edge(
        edge_cors_origins="https://tools.example, https://caster.example/"
    ) as edge:
        preflight = {"Access-Control-Request-Method": "POST"}
        allowed = await edge.options(
            "/graphql", headers={"Origin": "https://tools.example"} | preflight
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://tools.example"
        assert "access-control-allow-credentials" not in allowed.headers  # cookies stay home
        refused = await edge.options(
            "/graphql", headers={"Origin": "https://evil.example"} | preflight
        )
        assert "access-control-allow-origin" not in refused.headers
        simple = await edge.get("/healthz", headers={"Origin": "https://caster.example"})
        assert simple.headers["access-control-allow-origin"] == "https://caster.example"
        assert (
            "access-control-allow-origin"
            not in (await edge.get("/healthz", headers={"Origin": "https://evil.example"})).headers
        )


async def test_oversized_bodies_are_413_announced_or_streamed(make_edge: EdgeFactory) -> None:
    async with make_edge(edge_max_body_bytes=4096) as edge:
        announced = await edge.post("/graphql", content=b"{" + b" " * 5000 + b"}")
        assert announced.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        streamed = await edge.post(
            "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        small = await edge.post("/graphql", json={"query": "{ __typename }"})
        assert small.status_code == 200


async def test_quotas_per_address_and_per_token_answer_429_with_retry_after(
    make_edge: EdgeFactory,
) -> None:
    async with make_edge(
        edge_rate_limit_per_address_per_minute=5, edge_rate_limit_per_token_per_minute=2
    ) as edge:
        # Per token: the third call with one token is refused, another token still passes.
        token = {"Authorization": "Bearer token-one"}
        assert [(await edge.get("/", headers=token)).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        assert (await edge.get("/", headers={"Authorization": "Bearer two"})).status_code == 200
        # Per address: every call counted, refused by a token quota or not; the sixth is refused.
        assert (await edge.get("/")).status_code == 200
        refused = await edge.get("/")
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["x-content-type-options"] == "nosniff"
        # Probes are never counted.
        assert (await edge.get("/healthz")).status_code == 200


async def test_quotas_let_requests_through_while_redis_is_down(make_edge: EdgeFactory) -> None:
    async with make_edge(
        redis_url=f"redis://127.0.0.1:{free_port()}/0", edge_rate_limit_per_address_per_minute=1
    ) as edge:
        assert [(await edge.get("/")).status_code for _ in range(3)] == [200, 200, 200]


async def test_operator_endpoints_need_the_operator_token(make_edge: EdgeFactory) -> None:
    async with make_edge(edge_operator_token="op-secret-1") as edge:
        assert (await edge.get("/metrics")).status_code == 403
        assert (await edge.get("/metrics", headers={"X-Operator-Token": "nope"})).status_code == 403
        metrics = await edge.get("/metrics", headers={"X-Operator-Token": "op-secret-1"})
        assert metrics.status_code == 200
        assert "counterpick_edge_http_requests" in metrics.text

        anonymous = await edge.get("/readyz")
        # `counterpick up` waits on the status code alone; it tells anyone no more than that.
        assert anonymous.status_code == 503
        assert anonymous.json() == {"ready": False}
        operator = await edge.get("/readyz", headers={"X-Operator-Token": "op-secret-1"})
        assert operator.json()["services"]["auth"] == "UNREACHABLE"
        assert "127.0.0.1" not in anonymous.text


def test_access_log_lines_lose_their_query_strings() -> None:
    add_security(create_app(EdgeSettings()), EdgeSettings())
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/auth/steam/callback?state=s3cr3t&openid.sig=x", "1.1", 303),
        None,
    )
    for log_filter in logging.getLogger("uvicorn.access").filters:
        assert not isinstance(log_filter, logging.Filter) or log_filter.filter(record)
    assert record.getMessage() == '127.0.0.1:5555 - "GET /auth/steam/callback HTTP/1.1" 303'


async def test_the_first_load_of_the_page_is_under_200_kb(make_edge: EdgeFactory) -> None:
    async with make_edge() as edge:
        page = await edge.get("/")
        total = len(page.content)
        assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
        assert {"/static/app.js", "/static/style.css"} <= set(assets)
        for asset in assets:
            response = await edge.get(asset)
            assert response.status_code == 200, asset
            total += len(response.content)
        assert total < 200 * 1024


async def test_no_page_on_the_edge_loads_scripts_from_elsewhere(make_edge: EdgeFactory) -> None:
    """Every HTML page the edge serves (the draft page, the overlay, GET /graphql in a browser)
    names only its own scripts and styles: the CSP would block anything else, and an offline
    install could not fetch it (strawberry's GraphiQL loaded from a CDN and rendered blank)."""
    async with make_edge() as edge:
        for path in ("/", "/overlay/some-draft", "/graphql"):
            response = await edge.get(path, headers={"Accept": "text/html"})
            if not response.headers.get("content-type", "").startswith("text/html"):
                continue
            sources = re.findall(r'(?:src|href)="([^"]+)"', response.text)
            outside = [s for s in sources if not s.startswith(("/", "#", "data:"))]
            assert outside == [], (path, outside)
