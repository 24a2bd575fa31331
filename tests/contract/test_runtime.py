"""The shared runtime on a real grpc.aio server: error mapping, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from services.common import health
from services.common.config import ServiceSettings
from services.common.errors import InvalidArgument, NotFound
from services.common.server import GrpcServer, registration
from tests.rpc import failure

SERVICE = pb.DESCRIPTOR.services_by_name["DraftService"].full_name


class ScriptedDraftServicer(pb_grpc.DraftServiceServicer):
    """Behaves according to the draft id it is asked for, to exercise every path."""

    def __init__(self) -> None:
        self.slow_call_started = asyncio.Event()

    async def GetDraft(self, request: pb.GetDraftRequest, context: Any) -> pb.GetDraftResponse:
        if request.draft_id == "missing":
            raise NotFound(f"draft {request.draft_id} not found", metadata={"draft_id": "missing"})
        if request.draft_id == "bug":
            raise RuntimeError("database password is hunter2")
        if request.draft_id == "slow":
            self.slow_call_started.set()
            await asyncio.sleep(0.5)
        return pb.GetDraftResponse(draft=pb.Draft(draft_id=request.draft_id))

    async def WatchDraft(
        self, request: pb.WatchDraftRequest, context: Any
    ) -> AsyncIterator[pb.WatchDraftResponse]:
        yield pb.WatchDraftResponse(sequence=1)
        raise InvalidArgument(
            "resume_after_sequence is ahead of the draft", field="resume_after_sequence"
        )


@pytest.fixture
async def running() -> AsyncIterator[tuple[GrpcServer, ScriptedDraftServicer, grpc.aio.Channel]]:
    servicer = ScriptedDraftServicer()  # type: ignore[abstract]
    server = GrpcServer(
        name="draft-test",
        settings=ServiceSettings(port=0, shutdown_grace_seconds=2),
        services=[registration(servicer, pb_grpc.add_DraftServiceServicer_to_server, SERVICE)],
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield server, servicer, channel
    await channel.close()
    await server.stop(0)


async def test_domain_error_maps_to_its_code_with_error_info(running: Any) -> None:
    _, _, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pb_grpc.DraftServiceStub(channel).GetDraft(pb.GetDraftRequest(draft_id="missing"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "draft missing not found"
    info = failure(raised.value)
    assert (info.reason, info.domain, info.metadata["draft_id"]) == (
        "ERROR_REASON_NOT_FOUND",
        "counterpick.dev",
        "missing",
    )


async def test_unexpected_exception_is_internal_and_leaks_nothing(running: Any) -> None:
    _, _, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pb_grpc.DraftServiceStub(channel).GetDraft(pb.GetDraftRequest(draft_id="bug"))
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "hunter2" not in (raised.value.details() or "")
    assert failure(raised.value).reason == "ERROR_REASON_INTERNAL"


async def test_error_in_a_stream_after_messages_keeps_them_and_ends_with_the_code(
    running: Any,
) -> None:
    _, _, channel = running
    call = pb_grpc.DraftServiceStub(channel).WatchDraft(pb.WatchDraftRequest(draft_id="d"))
    received: list[int] = []

    async def drain() -> None:
        async for message in call:
            received.append(message.sequence)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await drain()
    assert received == [1]
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert failure(raised.value).metadata["field"] == "resume_after_sequence"


async def test_rpc_not_built_yet_answers_unimplemented(running: Any) -> None:
    _, _, channel = running
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await pb_grpc.DraftServiceStub(channel).CreateDraft(pb.CreateDraftRequest())
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "CreateDraft is not implemented yet" in (raised.value.details() or "")


async def test_calls_are_counted_by_method_and_code(running: Any) -> None:
    _, _, channel = running
    labels = {"grpc_service": SERVICE, "grpc_method": "GetDraft", "grpc_code": "NOT_FOUND"}
    before = REGISTRY.get_sample_value("counterpick_grpc_server_handled_total", labels) or 0
    for _ in range(3):
        with pytest.raises(grpc.aio.AioRpcError):
            await pb_grpc.DraftServiceStub(channel).GetDraft(pb.GetDraftRequest(draft_id="missing"))
    after = REGISTRY.get_sample_value("counterpick_grpc_server_handled_total", labels)
    assert after == before + 3


async def test_health_and_reflection_cover_the_service(running: Any) -> None:
    _, _, channel = running
    assert await health.check_health(channel) == "SERVING"
    assert await health.check_health(channel, SERVICE) == "SERVING"
    assert await health.check_health(channel, "counterpick.nope.v1.Nope") == "SERVICE_UNKNOWN"


async def test_graceful_stop_finishes_in_flight_calls_and_refuses_new_ones(running: Any) -> None:
    server, servicer, channel = running
    stub = pb_grpc.DraftServiceStub(channel)
    # A balancer watching health must see NOT_SERVING when the drain begins.
    watch = channel.unary_stream(
        "/grpc.health.v1.Health/Watch",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )(health_pb2.HealthCheckRequest(service=SERVICE))
    first: health_pb2.HealthCheckResponse = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING

    in_flight = asyncio.ensure_future(stub.GetDraft(pb.GetDraftRequest(draft_id="slow")))
    await servicer.slow_call_started.wait()
    stopping = asyncio.ensure_future(server.stop(grace=2))
    second: health_pb2.HealthCheckResponse = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert not in_flight.done()
    assert (await in_flight).draft.draft_id == "slow"
    await stopping

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetDraft(pb.GetDraftRequest(draft_id="late"), timeout=1)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
