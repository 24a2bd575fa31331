"""The shared gRPC token check on a real server: anonymous calls pass through, a sent token must
be valid, and the caller is what the RPC sees."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.auth.keys import KeyRing
from services.auth.tokens import issue_access_token, new_refresh_token
from services.common import health
from services.common.config import ServiceSettings
from services.common.dota_constants import load_constants
from services.common.server import GrpcServer, registration
from services.common.tokens import TokenVerifier
from services.model.runtime import ModelRuntime
from services.model.server import SERVICE_NAME, ModelServicer
from tests.auth_keys import SigningKeys
from tests.rpc import Failure, bearer, fails

ISSUER, AUDIENCE = "counterpick-auth", "counterpick"


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys", create=True)


@pytest.fixture
async def stub(ring: KeyRing) -> AsyncIterator[pb_grpc.ModelServiceAsyncStub]:
    server = GrpcServer(
        name="model",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                ModelServicer(ModelRuntime(constants=load_constants()), load_constants()),
                pb_grpc.add_ModelServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
        verifier=TokenVerifier(
            # Signatures and access rules only; revocation is test_api_keys's.
            issuer=ISSUER,
            audience=AUDIENCE,
            fetch_keys=SigningKeys(ring).source,
            deny_list=None,
        ),
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert await health.check_health(channel) == "SERVING"  # health needs no token
        yield pb_grpc.ModelServiceStub(channel)
    await server.stop(0)


async def call(stub: pb_grpc.ModelServiceAsyncStub, token: str | None) -> Failure:
    metadata = bearer(token) if token is not None else None
    return await fails(stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata))


async def test_anonymous_and_valid_calls_reach_the_rpc(
    stub: pb_grpc.ModelServiceAsyncStub, ring: KeyRing
) -> None:
    # The RPC itself answers (no snapshot yet): authentication let both through.
    assert (await call(stub, None)).code == grpc.StatusCode.FAILED_PRECONDITION
    token = issue_access_token(
        ring, issuer=ISSUER, audience=AUDIENCE, user_id="u", roles=["user"], now=int(time.time())
    ).token
    assert (await call(stub, token)).code == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_bad_token_is_unauthenticated_even_where_anonymous_is_allowed(
    stub: pb_grpc.ModelServiceAsyncStub, ring: KeyRing
) -> None:
    now = int(time.time())
    expired = issue_access_token(
        ring, issuer=ISSUER, audience=AUDIENCE, user_id="u", roles=["user"], now=now - 7200
    ).token
    error = await call(stub, expired)
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert error.reason == "ERROR_REASON_TOKEN_EXPIRED"
    for bad in ("garbage", new_refresh_token().token, expired[:-10]):
        error = await call(stub, bad)
        assert error.code == grpc.StatusCode.UNAUTHENTICATED
        assert error.reason == "ERROR_REASON_TOKEN_INVALID"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetModelInfo(
            pb.GetModelInfoRequest(), metadata=(("authorization", "Basic dXNlcjpwYXNz"),)
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
