"""The model's UserService reader: expected failures are None, never an error to the caller."""

from __future__ import annotations

import grpc

from services.common.errors import DependencyUnavailable
from services.model.users import UserPreferences
from tests.conftest import free_port

Metadata = tuple[tuple[str, str], ...]


async def _no_token() -> Metadata:
    raise DependencyUnavailable("auth", "auth unreachable")


async def _anonymous() -> Metadata:
    return ()


async def test_no_service_token_or_no_user_service_is_none() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for metadata in (_no_token, _anonymous):
        users = UserPreferences(
            lambda: grpc.aio.insecure_channel(address), metadata, timeout_seconds=0.5
        )
        assert await users.heroes("a-user") is None  # not opened yet
        await users.open()
        try:
            assert await users.heroes("a-user") is None
        finally:
            await users.close()
