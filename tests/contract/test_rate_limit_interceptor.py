"""The shared rate-limit interceptor on a real grpc.aio server and real Redis: quotas per tier,
anonymous callers per address, the service role exempt, RetryInfo on refusal, a stream counted
once, health exempt, and calls let through when Redis is down.

The server exports a small generic service (raw bytes, no proto) with one unary and one
server-streaming method, behind the same interceptor chain every mesh service runs.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from prometheus_client import REGISTRY

from services.common.config import ServiceSettings
from services.common.rate_limit import (
    CLIENT_ADDRESS_HEADER,
    Quota,
    TierQuotas,
    rate_limiter_from_settings,
)
from services.common.server import GrpcServer, ServiceRegistration
from services.common.tokens import Caller, DenyList, TokenVerifier, current_caller
from tests.auth_keys import AUDIENCE, ISSUER, SigningKeys
from tests.conftest import free_port
from tests.rpc import Failure, Metadata, bearer, fails, failure

SERVICE = "counterpick.test.v1.EchoService"
PING = f"/{SERVICE}/Ping"
WATCH = f"/{SERVICE}/Watch"
STREAM_LENGTH = 5
WINDOW_SECONDS = 60.0


def _raw(data: bytes) -> bytes:
    """The echo service's messages are raw bytes, passed through as they are."""
    return data


def _check_health(channel: grpc.aio.Channel) -> grpc.aio.UnaryUnaryMultiCallable[Any, Any]:
    return channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )


async def _ping(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    """Answers with who the call ran as, so a test sees the caller the interceptors bound."""
    caller = current_caller()
    return (caller.user_id if caller is not None else "anonymous").encode()


async def _watch(
    request: bytes, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[bytes]:
    for index in range(STREAM_LENGTH):
        yield str(index).encode()


def _add_echo(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Ping": grpc.unary_unary_rpc_method_handler(_ping),
                    "Watch": grpc.unary_stream_rpc_method_handler(_watch),
                },
            ),
        )
    )


@dataclass
class Limited:
    """A running limited server, and how to call it as anyone from either loopback address."""

    port: int
    keys: SigningKeys

    def metadata(self, user_id: str, *roles: str, tier: str = "free") -> Metadata:
        return bearer(self.keys.token(*roles, user_id=user_id, tier=tier))

    @asynccontextmanager
    async def channel(self, host: str = "127.0.0.1") -> AsyncIterator[grpc.aio.Channel]:
        async with grpc.aio.insecure_channel(f"{host}:{self.port}") as channel:
            yield channel

    async def ping(self, metadata: Metadata | None = None, host: str = "127.0.0.1") -> str:
        async with self.channel(host) as channel:
            ping = channel.unary_unary(PING, request_serializer=_raw, response_deserializer=_raw)
            answer: bytes = await ping(b"", metadata=metadata, timeout=10)
            return answer.decode()

    async def watch(self, metadata: Metadata | None = None) -> list[bytes]:
        async with self.channel() as channel:
            watch = channel.unary_stream(WATCH, request_serializer=_raw, response_deserializer=_raw)
            call = watch(b"", metadata=metadata, timeout=10)
            return [bytes(item) async for item in call]


@asynccontextmanager
async def limited_server(redis_url: str, tmp_path: Path, **settings: Any) -> AsyncIterator[Limited]:
    """A GrpcServer with token checks and the rate limiter from `settings`, keyed under a prefix
    of its own; it listens on every address, IPv4 and IPv6, so a test can call from two."""
    values: dict[str, Any] = {
        "host": "[::]",
        "port": 0,
        "rate_limit_key_prefix": f"test:rate:{uuid.uuid4().hex}",
        "rate_limit_anonymous_per_minute": 2,
        "rate_limit_free_per_minute": 3,
        "rate_limit_plus_per_minute": 5,
        "rate_limit_pro_per_minute": 8,
    } | settings
    config = ServiceSettings.model_validate(values)
    keys = SigningKeys.create(tmp_path / f"keys-{uuid.uuid4().hex}")
    server = GrpcServer(
        name="echo",
        settings=config,
        services=[ServiceRegistration(SERVICE, _add_echo)],
        verifier=TokenVerifier(
            issuer=ISSUER, audience=AUDIENCE, fetch_keys=keys.source, deny_list=DenyList(redis_url)
        ),
        rate_limiter=rate_limiter_from_settings(config, redis_url, "echo"),
    )
    port = await server.start()
    try:
        yield Limited(port, keys)
    finally:
        await server.stop(0)


async def _calls_until_refused(limited: Limited, metadata: Metadata | None, limit: int) -> int:
    """How many pings pass before the first refusal (at most `limit` tries)."""
    passed = 0
    while passed < limit:
        try:
            await limited.ping(metadata)
        except grpc.aio.AioRpcError as error:
            refused = error
            break
        passed += 1
    else:
        return limit
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused
    return passed


def _assert_rate_limited(got: Failure) -> None:
    assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert got.reason == "ERROR_REASON_RATE_LIMITED"
    # The window holds calls made a moment ago: the oldest leaves it in just under a minute.
    assert got.retry_delay is not None
    assert WINDOW_SECONDS - 10 < got.retry_delay <= WINDOW_SECONDS
    assert float(got.metadata["retry_after_seconds"]) == pytest.approx(got.retry_delay, abs=0.01)


async def test_each_tier_gets_its_own_quota(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        free = limited.metadata("u-free", tier="free")
        plus = limited.metadata("u-plus", tier="plus")
        pro = limited.metadata("u-pro", tier="pro")
        assert await _calls_until_refused(limited, free, 20) == 3
        # The free user is refused while the paying ones still have room; each user has a quota
        # of their own, whatever their tier.
        assert await _calls_until_refused(limited, plus, 20) == 5
        assert await _calls_until_refused(limited, pro, 20) == 8
        assert await _calls_until_refused(limited, limited.metadata("u-free-2"), 20) == 3
        # A tier this deployment does not know gets the lowest quota, never a larger one.
        unknown = limited.metadata("u-odd", tier="platinum")
        assert await _calls_until_refused(limited, unknown, 20) == 3


async def test_a_refusal_is_resource_exhausted_with_retry_info(
    redis_url: str, tmp_path: Path
) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        free = limited.metadata("u-1")
        for _ in range(3):
            assert await limited.ping(free) == "u-1"
        _assert_rate_limited(await fails(limited.ping(free)))


async def test_the_window_passing_lets_the_caller_in_again(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path, rate_limit_window_seconds=1.0) as limited:
        free = limited.metadata("u-1")
        for _ in range(3):
            await limited.ping(free)
        got = await fails(limited.ping(free))
        assert got.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert got.retry_delay is not None
        assert 0 < got.retry_delay <= 1.0
        await asyncio.sleep(got.retry_delay + 0.05)
        assert await limited.ping(free) == "u-1"


async def test_anonymous_calls_are_counted_per_address(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        for _ in range(2):
            assert await limited.ping() == "anonymous"
        _assert_rate_limited(await fails(limited.ping()))
        # Another address has its own quota ...
        for _ in range(2):
            assert await limited.ping(host="[::1]") == "anonymous"
        assert (await fails(limited.ping(host="[::1]"))).code == grpc.StatusCode.RESOURCE_EXHAUSTED
        # ... and a signed-in caller at the exhausted address is counted as themself.
        assert await limited.ping(limited.metadata("u-1")) == "u-1"


async def test_a_trusted_proxy_is_limited_per_end_client_and_nobody_else_can_claim_one(
    redis_url: str, tmp_path: Path
) -> None:
    # The edge (trusted, on 127.0.0.1) calls for two browsers: each has the anonymous quota of
    # its own address. The same header from an untrusted address (::1) is ignored.
    async with limited_server(
        redis_url, tmp_path, rate_limit_trusted_proxies="127.0.0.1"
    ) as limited:

        def browser(address: str) -> Metadata:
            return ((CLIENT_ADDRESS_HEADER, address),)

        for _ in range(2):
            assert await limited.ping(browser("203.0.113.7")) == "anonymous"
        _assert_rate_limited(await fails(limited.ping(browser("203.0.113.7"))))
        for _ in range(2):
            assert await limited.ping(browser("198.51.100.4")) == "anonymous"
        untrusted = [await fails_or_passes(limited, browser(f"192.0.2.{n}")) for n in range(3)]
        assert untrusted == ["anonymous", "anonymous", "RESOURCE_EXHAUSTED"]


async def fails_or_passes(limited: Limited, metadata: Metadata) -> str:
    """A ping from the untrusted address ::1: its answer, or the refusal's code."""
    try:
        return await limited.ping(metadata, host="[::1]")
    except grpc.aio.AioRpcError as error:
        return error.code().name


async def test_service_callers_are_not_limited(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        service = limited.metadata("svc-draft", "service", tier="free")
        # Well past every quota: a service's token carries the calls of all the users it serves.
        for _ in range(30):
            assert await limited.ping(service) == "svc-draft"
        user = limited.metadata("u-1", "user", tier="free")
        assert await _calls_until_refused(limited, user, 20) == 3


async def test_a_stream_counts_once_when_it_starts(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        free = limited.metadata("u-watcher")
        # Two streams of five messages each use two of the three calls ...
        for _ in range(2):
            assert len(await limited.watch(free)) == STREAM_LENGTH
        assert await limited.ping(free) == "u-watcher"
        # ... and once the quota is spent a new stream is refused before its first message.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await limited.watch(free)
        _assert_rate_limited(failure(raised.value))


async def test_a_bad_token_is_refused_before_it_spends_a_quota(
    redis_url: str, tmp_path: Path
) -> None:
    async with limited_server(redis_url, tmp_path) as limited:
        for _ in range(5):
            got = await fails(limited.ping((("authorization", "Bearer garbage"),)))
            assert got.code == grpc.StatusCode.UNAUTHENTICATED
        # The address's anonymous quota is untouched by those calls.
        for _ in range(2):
            assert await limited.ping() == "anonymous"


async def test_health_and_reflection_are_exempt(redis_url: str, tmp_path: Path) -> None:
    async with limited_server(redis_url, tmp_path) as limited, limited.channel() as channel:
        for _ in range(2):
            await limited.ping()
        check = _check_health(channel)
        for _ in range(10):
            response = await check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        assert (await fails(limited.ping())).code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_calls_pass_when_redis_is_down(tmp_path: Path) -> None:
    # Nothing listens on this port: every quota check fails to reach Redis.
    down = f"redis://127.0.0.1:{free_port()}/0"
    before = REGISTRY.get_sample_value(
        "counterpick_rate_limit_store_errors_total", {"limiter": "echo"}
    )
    async with limited_server(down, tmp_path) as limited:
        free = limited.metadata("u-1")
        for _ in range(10):
            assert await limited.ping(free) == "u-1"
        for _ in range(10):
            assert await limited.ping() == "anonymous"
        assert len(await limited.watch(free)) == STREAM_LENGTH
    after = REGISTRY.get_sample_value(
        "counterpick_rate_limit_store_errors_total", {"limiter": "echo"}
    )
    # Each unchecked call is counted, so an operator sees the limiter is blind.
    assert (after or 0) - (before or 0) == 21


def test_quotas_by_caller() -> None:
    quotas = TierQuotas(
        anonymous=Quota("anonymous", 1, 60),
        tiers={"free": Quota("free", 2, 60), "pro": Quota("pro", 3, 60)},
    )

    def caller(tier: str, *roles: str) -> Caller:
        return Caller("u", frozenset(roles or ("user",)), "j", 0, tier=tier)

    assert quotas.for_caller(None) == quotas.anonymous
    assert quotas.for_caller(caller("pro")) == quotas.tiers["pro"]
    assert quotas.for_caller(caller("gold")) == quotas.tiers["free"]
    assert quotas.for_caller(caller("free", "service")) is None
    with pytest.raises(ValueError, match="fallback tier"):
        TierQuotas(anonymous=quotas.anonymous, tiers={"pro": quotas.tiers["pro"]})


async def test_the_limiter_is_installed_only_when_given() -> None:
    # No limiter: nothing is counted, however many anonymous calls come from one address.
    server = GrpcServer(
        name="echo",
        settings=ServiceSettings(port=0, rate_limit_anonymous_per_minute=1),
        services=[ServiceRegistration(SERVICE, _add_echo)],
    )
    port = await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(5):
                ping = channel.unary_unary(
                    PING, request_serializer=_raw, response_deserializer=_raw
                )
                assert await ping(b"", timeout=10) == b"anonymous"
    finally:
        await server.stop(0)
