"""TLS on a service's gRPC port, from settings: a TLS client that trusts the CA gets health and
reflection, a plaintext or distrusting client gets nothing, and with a client CA only clients
holding a certificate it signed get in. Also the client side, `open_channel` with a root cert."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from pydantic import ValidationError

from services.common.channels import ChannelTls, open_channel
from services.common.config import CommonSettings, ServiceSettings
from services.common.server import GrpcServer
from tests.conftest import free_port
from tests.tls_certs import TlsFiles, make_tls_files


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@asynccontextmanager
async def tls_server(tls: TlsFiles, **settings: Any) -> AsyncIterator[int]:
    """A health-only GrpcServer serving TLS with the test certificate; yields its port."""
    values = {
        "port": 0,
        "tls_cert_file": tls.server_cert,
        "tls_key_file": tls.server_key,
    } | settings
    server = GrpcServer(name="tls", settings=ServiceSettings.model_validate(values), services=[])
    port = await server.start()
    try:
        yield port
    finally:
        await server.stop(0)


async def _health(channel: grpc.aio.Channel) -> int:
    """The overall health status the server reports."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    response: health_pb2.HealthCheckResponse = await check(
        health_pb2.HealthCheckRequest(), timeout=5
    )
    return int(response.status)


async def _reflected_services(channel: grpc.aio.Channel) -> list[str]:
    info = channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    call = info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    names: list[str] = []
    async for response in call:
        names += [service.name for service in response.list_services_response.service]
    return names


async def test_a_client_trusting_the_ca_gets_health_and_reflection(tls: TlsFiles) -> None:
    async with tls_server(tls) as port:
        # By name and by address: the certificate carries both.
        for target, server_name in ((f"localhost:{port}", None), (f"127.0.0.1:{port}", None)):
            tls_config = ChannelTls.from_file(tls.ca_cert, server_name=server_name)
            async with open_channel(target, tls=tls_config) as channel:
                assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
                assert "grpc.health.v1.Health" in await _reflected_services(channel)


async def test_plaintext_and_untrusting_clients_are_refused(tls: TlsFiles, tmp_path: Path) -> None:
    other_ca = make_tls_files(tmp_path / "other", "another CA")
    async with tls_server(tls) as port:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _health(plaintext)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate from a CA the client does not trust is not accepted either.
        async with open_channel(
            f"localhost:{port}", tls=ChannelTls.from_file(other_ca.ca_cert)
        ) as untrusting:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _health(untrusting)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_name_override_verifies_the_certificate_name(tls: TlsFiles) -> None:
    async with tls_server(tls) as port:
        # Dialled by an address the certificate also names, checked against a name it names.
        async with open_channel(
            f"127.0.0.1:{port}", tls=ChannelTls.from_file(tls.ca_cert, server_name="localhost")
        ) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING
        # A name the certificate does not carry is refused.
        async with open_channel(
            f"127.0.0.1:{port}", tls=ChannelTls.from_file(tls.ca_cert, server_name="model")
        ) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _health(channel)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_with_a_client_ca_only_certified_clients_get_in(tls: TlsFiles) -> None:
    async with tls_server(tls, tls_client_ca_file=tls.ca_cert) as port:
        anonymous = ChannelTls.from_file(tls.ca_cert)
        async with open_channel(f"localhost:{port}", tls=anonymous) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _health(channel)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        certified = ChannelTls(
            root_certificates=tls.ca_cert.read_bytes(),
            private_key=tls.client_key.read_bytes(),
            certificate_chain=tls.client_cert.read_bytes(),
        )
        async with open_channel(f"localhost:{port}", tls=certified) as channel:
            assert await _health(channel) == health_pb2.HealthCheckResponse.SERVING


async def test_a_public_tls_port_beside_the_private_plaintext_one(tls: TlsFiles) -> None:
    """TLS_PORT: bots reach the service over TLS while the mesh keeps calling PORT in plaintext."""
    public = free_port()
    settings = ServiceSettings.model_validate(
        {
            "port": 0,
            "tls_cert_file": tls.server_cert,
            "tls_key_file": tls.server_key,
            "tls_port": public,
        }
    )
    server = GrpcServer(name="tls", settings=settings, services=[])
    port = await server.start()
    try:
        assert server.tls_port == public
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as private:
            assert await _health(private) == health_pb2.HealthCheckResponse.SERVING
        async with open_channel(
            f"localhost:{public}", tls=ChannelTls.from_file(tls.ca_cert)
        ) as secure:
            assert await _health(secure) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{public}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await _health(plaintext)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


def test_tls_settings_come_from_the_environment(
    tls: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TLS_CERT_FILE", str(tls.server_cert))
    monkeypatch.setenv("TLS_KEY_FILE", str(tls.server_key))
    monkeypatch.setenv("TLS_ROOT_CERT_FILE", str(tls.ca_cert))
    settings = ServiceSettings()
    assert (settings.tls_cert_file, settings.tls_key_file) == (tls.server_cert, tls.server_key)
    channel_tls = ChannelTls.from_settings(settings)
    assert channel_tls is not None
    assert channel_tls.root_certificates == tls.ca_cert.read_bytes()
    # Unset, peers are called over plaintext.
    assert ChannelTls.from_settings(CommonSettings(tls_root_cert_file=None)) is None


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"tls_cert_file": "CERT"}, "must be set together"),
        ({"tls_key_file": "KEY"}, "must be set together"),
        ({"tls_client_ca_file": "CA"}, "needs TLS_CERT_FILE"),
        ({"tls_port": "50443"}, "TLS_PORT needs TLS_CERT_FILE"),
        ({"tls_cert_file": "missing.pem", "tls_key_file": "KEY"}, "does not point to a file"),
    ],
)
def test_half_a_tls_configuration_refuses_to_start(
    tls: TlsFiles, values: dict[str, str], problem: str
) -> None:
    # Serving plaintext because one variable is missing would be a silent downgrade.
    files = {"CERT": tls.server_cert, "KEY": tls.server_key, "CA": tls.ca_cert}
    resolved = {
        name: value if name == "tls_port" else files.get(value, tls.server_cert.parent / value)
        for name, value in values.items()
    }
    with pytest.raises(ValidationError, match=problem):
        ServiceSettings.model_validate(resolved)
