"""gRPC health checks of mesh services by address, used by `status`, `healthcheck` and `up`."""

from __future__ import annotations

import asyncio

import grpc

from services.common import health


async def check_health(address: str, service: str = "", *, timeout_seconds: float = 2.0) -> str:
    """The health status name of `service` at `address` ("SERVING", ...), or "UNREACHABLE"."""
    async with grpc.aio.insecure_channel(address) as channel:
        return await health.check_health(channel, service, timeout_seconds=timeout_seconds)


async def wait_until_serving(address: str, *, timeout_seconds: float) -> bool:
    """Poll `address` until its overall health is SERVING or the time is up."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    while loop.time() < deadline:
        if await check_health(address, timeout_seconds=1.0) == "SERVING":
            return True
        await asyncio.sleep(0.1)
    return False
