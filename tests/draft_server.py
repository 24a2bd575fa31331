"""One draft service replica on the test's Redis, without model or user service (drafts go on
without suggestions), verifying tokens signed by the test's keys: for the edge's tests."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from services.common.service_tokens import StaticToken
from services.draft.config import DraftSettings
from services.draft.server import build_server
from tests.auth_keys import SigningKeys
from tests.conftest import free_port


@dataclass(frozen=True)
class DraftServer:
    """The running replica: its address, a channel to it and a stub."""

    address: str
    channel: grpc.aio.Channel
    stub: pb_grpc.DraftServiceAsyncStub


@contextlib.asynccontextmanager
async def draft_server(redis_url: str, keys: SigningKeys) -> AsyncIterator[DraftServer]:
    """Start a replica with its own key prefix; stop it on exit."""
    settings = DraftSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "model_addr": f"127.0.0.1:{free_port()}",
            "user_addr": f"127.0.0.1:{free_port()}",
            "draft_key_prefix": f"test:edge-draft:{time.monotonic_ns()}",
            "store_wait_seconds": 2,
            "draft_peer_timeout_seconds": 0.2,
        }
    )
    server = build_server(
        settings, key_source=keys.source, metadata=StaticToken(keys.token("service")).metadata
    )
    port = await server.start()
    address = f"127.0.0.1:{port}"
    channel = grpc.aio.insecure_channel(address)
    try:
        yield DraftServer(address, channel, pb_grpc.DraftServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(0)
