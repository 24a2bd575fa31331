"""One request through the edge is one trace across processes (edge -> service), via OTLP."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import REDIS_URL, REPO_ROOT, free_port

pytestmark = pytest.mark.e2e


@dataclass
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int


@dataclass
class TraceCollector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP/gRPC trace receiver standing in for the OpenTelemetry collector."""

    spans: list[ReceivedSpan] = field(default_factory=list)

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            attributes.get("service.name", "?"),
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.kind,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[TraceCollector, int]]:
    server = grpc.aio.server()
    receiver = TraceCollector()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield receiver, port
    await server.stop(0)


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=15)


async def test_graphql_request_is_one_trace_across_edge_and_service(
    collector: tuple[TraceCollector, int], processes: list[subprocess.Popen[bytes]]
) -> None:
    receiver, collector_port = collector
    otel = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    draft_port, edge_port = free_port(), free_port()
    processes.append(
        _spawn(
            "services.draft",
            {
                **otel,
                "PORT": str(draft_port),
                "REDIS_URL": REDIS_URL,
                "OTEL_SERVICE_NAME": "counterpick-draft",
            },
        )
    )
    processes.append(
        _spawn(
            "gateway",
            {
                **otel,
                "PORT": str(edge_port),
                "DRAFT_ADDR": f"127.0.0.1:{draft_port}",
                "OTEL_SERVICE_NAME": "counterpick-edge",
            },
        )
    )
    edge = f"http://127.0.0.1:{edge_port}"
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(200):
            try:
                status = (await client.get(edge + "/graphql?query={mesh{name status}}")).json()
                rows = {row["name"]: row["status"] for row in status["data"]["mesh"]}
                if rows["draft"] == "SERVING":
                    break
            except (httpx.HTTPError, KeyError, TypeError, ValueError):
                pass
            await asyncio.sleep(0.1)
        else:
            pytest.fail("edge and draft service did not come up")
        receiver.spans.clear()
        answer = await client.post(edge + "/graphql", json={"query": "{ mesh { name status } }"})
        assert answer.status_code == 200

    def trace_of_request() -> tuple[ReceivedSpan, ReceivedSpan, list[ReceivedSpan]] | None:
        """The request's edge root, the draft SERVER span in its trace, and the spans that are
        that server span's parent; None until all have arrived (each process exports in its own
        batches, so under load one process's spans can come seconds after the other's)."""
        edge_roots = [
            s
            for s in receiver.spans
            if s.service == "counterpick-edge" and s.name.startswith("POST")
        ]
        for root in edge_roots:
            for span in receiver.spans:
                if (
                    span.service == "counterpick-draft"
                    and span.trace_id == root.trace_id
                    and span.name == "/grpc.health.v1.Health/Check"
                ):
                    parents = [s for s in receiver.spans if s.span_id == span.parent_span_id]
                    if parents:
                        return root, span, parents
        return None

    for _ in range(300):
        found = trace_of_request()
        if found:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail(
            "no shared trace with the edge's client span; spans: "
            f"{[(s.service, s.name, s.span_id, s.parent_span_id) for s in receiver.spans]}"
        )
    edge_root, _draft_server, edge_client = found
    # The draft service's SERVER span hangs under the edge's CLIENT span for that call.
    assert len(edge_client) == 1
    assert edge_client[0].service == "counterpick-edge"
    assert edge_client[0].trace_id == edge_root.trace_id
