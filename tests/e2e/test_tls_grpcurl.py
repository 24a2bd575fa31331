"""A real service process serving TLS, as an operator reaches it: grpcurl lists, describes and
health-checks it with the CA's certificate, a UserService call gets its answer over TLS, and
plaintext or an untrusted CA get nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from tests.conftest import POSTGRES_DSN, REDIS_URL, REPO_ROOT, free_port
from tests.tls_certs import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
USER_SERVICE = "counterpick.user.v1.UserService"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GRPCURL, *args], capture_output=True, text=True, timeout=30, check=False)


@dataclass
class TlsService:
    address: str
    tls: TlsFiles

    def secure(self, *args: str) -> str:
        """grpcurl over TLS trusting the test CA; the certificate is for localhost."""
        result = grpcurl("-cacert", str(self.tls.ca_cert), "-authority", "localhost", *args)
        assert result.returncode == 0, f"grpcurl {' '.join(args)} failed: {result.stderr}"
        return result.stdout


async def _drop_schema(schema: str) -> None:
    connection = await asyncpg.connect(POSTGRES_DSN)
    try:
        # The name is generated below (user_tls_<hex>), never input.
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def user_over_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsService]:
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    port = free_port()
    schema = f"user_tls_{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PORT": str(port),
        "POSTGRES_DSN": POSTGRES_DSN,
        "REDIS_URL": REDIS_URL,
        "USER_POSTGRES_SCHEMA": schema,
        "AUTH_ADDR": f"127.0.0.1:{free_port()}",
        "TLS_CERT_FILE": str(tls.server_cert),
        "TLS_KEY_FILE": str(tls.server_key),
        "OTEL_TRACES_EXPORTER": "none",
        "STORE_WAIT_SECONDS": "10",
    }
    # Logs to a file, not a pipe nobody reads: a full pipe would stall the service.
    log = tls.ca_cert.parent / "user.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.user"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    service = TlsService(f"127.0.0.1:{port}", tls)
    try:
        deadline = time.monotonic() + 60
        while True:
            check = grpcurl(
                "-cacert", str(tls.ca_cert), "-authority", "localhost", service.address, "list"
            )
            if check.returncode == 0:
                break
            assert process.poll() is None, f"the user service exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"no TLS answer in 60 s: {check.stderr}"
            time.sleep(0.3)
        yield service
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        asyncio.run(_drop_schema(schema))


def test_grpcurl_lists_describes_and_health_checks_over_tls(user_over_tls: TlsService) -> None:
    listed = user_over_tls.secure(user_over_tls.address, "list").split()
    assert USER_SERVICE in listed
    assert "grpc.health.v1.Health" in listed
    described = user_over_tls.secure(user_over_tls.address, "describe", USER_SERVICE)
    assert "rpc GetProfile" in described
    overall = json.loads(user_over_tls.secure(user_over_tls.address, "grpc.health.v1.Health/Check"))
    assert overall == {"status": "SERVING"}
    named = json.loads(
        user_over_tls.secure(
            "-d",
            json.dumps({"service": USER_SERVICE}),
            user_over_tls.address,
            "grpc.health.v1.Health/Check",
        )
    )
    assert named == {"status": "SERVING"}


def test_an_rpc_is_answered_over_tls(user_over_tls: TlsService) -> None:
    # Without a token the service answers, over TLS, that it needs one.
    result = grpcurl(
        "-cacert",
        str(user_over_tls.tls.ca_cert),
        "-authority",
        "localhost",
        user_over_tls.address,
        f"{USER_SERVICE}/GetProfile",
    )
    assert result.returncode != 0
    assert "Unauthenticated" in result.stderr
    assert "ERROR_REASON_UNAUTHENTICATED" in result.stderr


def test_plaintext_and_an_untrusted_ca_get_nothing(
    user_over_tls: TlsService, tmp_path: Path
) -> None:
    plaintext = grpcurl("-plaintext", user_over_tls.address, "list")
    assert plaintext.returncode != 0
    other = make_tls_files(tmp_path / "other", "another CA")
    untrusted = grpcurl(
        "-cacert", str(other.ca_cert), "-authority", "localhost", user_over_tls.address, "list"
    )
    assert untrusted.returncode != 0
    assert "certificate" in untrusted.stderr.lower()
