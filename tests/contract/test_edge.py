"""The edge in-process: readiness follows the mesh, GraphQL reports it, metrics count requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from fastapi.testclient import TestClient

from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from gateway.app import create_app
from gateway.config import EdgeSettings
from services.common.config import ServiceSettings
from services.common.server import GrpcServer, registration
from tests.conftest import free_port

# /readyz's detail and /metrics are for operators (gateway/security.py).
OPERATOR_TOKEN = "test-operator-token"
OPERATOR = {"X-Operator-Token": OPERATOR_TOKEN}


@pytest.fixture
def edge_to_nothing() -> Iterator[TestClient]:
    """An edge whose six peers are all down (free ports nobody listens on)."""
    addresses = {
        f"{name}_addr": f"127.0.0.1:{free_port()}"
        for name in ("ingest", "etl", "model", "auth", "user", "draft")
    }
    settings = EdgeSettings.model_validate(
        {"grpc_timeout_seconds": 0.5, "edge_operator_token": OPERATOR_TOKEN, **addresses}
    )
    with TestClient(create_app(settings), headers=OPERATOR) as client:
        yield client


def test_liveness_does_not_depend_on_the_mesh(edge_to_nothing: TestClient) -> None:
    assert edge_to_nothing.get("/healthz").json() == {"status": "ok"}


def test_readiness_fails_with_each_unreachable_service_named(edge_to_nothing: TestClient) -> None:
    response = edge_to_nothing.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["ready"] is False
    assert body["services"] == dict.fromkeys(
        ["ingest", "etl", "model", "auth", "user", "draft"], "UNREACHABLE"
    )


def test_graphql_reports_unreachable_services_as_data_not_errors(
    edge_to_nothing: TestClient,
) -> None:
    answer = edge_to_nothing.post("/graphql", json={"query": "{ mesh { name status } }"}).json()
    assert "errors" not in answer
    assert {row["status"] for row in answer["data"]["mesh"]} == {"UNREACHABLE"}


def test_graphql_rejects_a_malformed_query_with_a_graphql_error(
    edge_to_nothing: TestClient,
) -> None:
    # The error travels in the body (and the status is 400: a request error, GraphQL over HTTP).
    response = edge_to_nothing.post("/graphql", json={"query": "{ mesh { name "})
    assert response.json()["data"] is None
    assert response.json()["errors"][0]["message"].startswith("Syntax Error")


def test_graphql_rejects_alias_floods(edge_to_nothing: TestClient) -> None:
    # 40 aliases of a field that fans out to six gRPC calls each: refused before execution.
    flood = "{ " + "".join(f"a{i}: mesh {{ name }} " for i in range(40)) + "}"
    answer = edge_to_nothing.post("/graphql", json={"query": flood}).json()
    assert "aliases found" in answer["errors"][0]["message"]


def test_requests_are_counted_by_route(edge_to_nothing: TestClient) -> None:
    edge_to_nothing.get("/healthz")
    metrics = edge_to_nothing.get("/metrics").text
    assert 'counterpick_edge_http_requests_total{route="/healthz",status="200"}' in metrics


@pytest.fixture
async def draft_only() -> AsyncIterator[int]:
    server = GrpcServer(
        "draft",
        ServiceSettings(port=0),
        [
            registration(
                pb_grpc.DraftServiceServicer(),  # type: ignore[abstract]
                pb_grpc.add_DraftServiceServicer_to_server,
                pb.DESCRIPTOR.services_by_name["DraftService"].full_name,
            )
        ],
    )
    port = await server.start()
    yield port
    await server.stop(0)


async def test_readiness_names_the_one_service_that_is_down(draft_only: int) -> None:
    addresses = {
        f"{name}_addr": f"127.0.0.1:{free_port()}"
        for name in ("ingest", "etl", "model", "auth", "user")
    }
    settings = EdgeSettings.model_validate(
        {
            "draft_addr": f"127.0.0.1:{draft_only}",
            "grpc_timeout_seconds": 0.5,
            "edge_operator_token": OPERATOR_TOKEN,
            **addresses,
        }
    )
    from httpx import ASGITransport, AsyncClient

    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://edge") as client,
    ):
        body = (await client.get("/readyz", headers=OPERATOR)).json()
    assert body["services"]["draft"] == "SERVING"
    assert body["services"]["model"] == "UNREACHABLE"
