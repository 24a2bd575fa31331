"""`counterpick up` as a user runs it: every service answers grpcurl, a killed service comes back,
and SIGTERM leaves nothing."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from services.cli.mesh_state import MeshState
from services.cli.up import PUBLIC_TLS_PORTS, SERVICES
from tests.conftest import REDIS_URL, REPO_ROOT, free_port
from tests.tls_certs import TlsFiles, make_tls_files

pytestmark = pytest.mark.e2e
OPERATOR_TOKEN = "test-up-operator-token"
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))
SERVICE_CLASS = {
    "ingest": "IngestService",
    "etl": "EtlService",
    "model": "ModelService",
    "auth": "AuthService",
    "user": "UserService",
    "draft": "DraftService",
}


@dataclass
class RunningMesh:
    process: subprocess.Popen[str]
    addresses: dict[str, str]
    edge_url: str
    banner: str
    ready_seconds: float
    state_dir: Path
    tls: TlsFiles
    tls_ports: dict[str, int]


def _grpcurl(*args: str) -> str:
    result = subprocess.run(
        [GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"grpcurl {' '.join(args)} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    state_dir = tmp_path_factory.mktemp("mesh")
    ports = {name: free_port() for name in SERVICES}
    edge_port = free_port()
    # The public API over TLS, as a deployment serves bots: a certificate of the test's own CA.
    tls = make_tls_files(tmp_path_factory.mktemp("tls"))
    tls_ports = {name: free_port() for name in PUBLIC_TLS_PORTS}
    argv = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        "--edge-port",
        str(edge_port),
        "--kafka-port",
        str(free_port()),
        "--state-dir",
        str(state_dir),
        # Seeding has its own test (test_first_start.py); here it would only load the machine.
        "--no-seed",
    ]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    argv += ["--tls-cert", str(tls.server_cert), "--tls-key", str(tls.server_key)]
    for name, port in tls_ports.items():
        argv += [f"--{name}-tls-port", str(port)]
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "WAREHOUSE_DSN"}
    }
    # Tests never reach the internet: ingest polls a port where nothing listens.
    env["OPENDOTA_BASE_URL"] = f"http://127.0.0.1:{free_port()}/api"
    # This run's own Redis database: another checkout's mesh on this machine uses db 0.
    env["REDIS_URL"] = REDIS_URL
    # /readyz's per-service detail is for operators (gateway/security.py).
    env["EDGE_OPERATOR_TOKEN"] = OPERATOR_TOKEN
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    else:
        pytest.fail("counterpick up exited before it was ready:\n" + "".join(banner))
    ready_seconds = time.monotonic() - started
    text = "".join(banner)
    addresses = {}
    for name in SERVICES:
        match = re.search(rf"^\s+{name}\s+(\S+:\d+)\s", text, re.MULTILINE)
        assert match, f"no address for {name} in:\n{text}"
        addresses[name] = match.group(1)
    yield RunningMesh(
        process,
        addresses,
        f"http://127.0.0.1:{edge_port}",
        text,
        ready_seconds,
        state_dir,
        tls,
        tls_ports,
    )
    if process.poll() is None:
        process.kill()
        process.wait()


def test_banner_lists_the_requested_ports(mesh: RunningMesh) -> None:
    assert "counterpick is up in" in mesh.banner
    assert mesh.edge_url + "/graphql" in mesh.banner
    for name, address in mesh.addresses.items():
        assert address.startswith("127.0.0.1:"), name


@pytest.mark.parametrize("name", SERVICES)
def test_grpcurl_lists_and_describes_the_service(mesh: RunningMesh, name: str) -> None:
    full_name = f"counterpick.{name}.v1.{SERVICE_CLASS[name]}"
    listed = _grpcurl(mesh.addresses[name], "list").split()
    assert full_name in listed
    assert "grpc.health.v1.Health" in listed
    described = _grpcurl(mesh.addresses[name], "describe", full_name)
    assert f"service {SERVICE_CLASS[name]}" in described


@pytest.mark.parametrize("name", SERVICES)
def test_health_is_serving_overall_and_per_service(mesh: RunningMesh, name: str) -> None:
    address = mesh.addresses[name]
    overall = json.loads(_grpcurl(address, "grpc.health.v1.Health/Check"))
    assert overall == {"status": "SERVING"}
    full_name = f"counterpick.{name}.v1.{SERVICE_CLASS[name]}"
    per_service = json.loads(
        _grpcurl("-d", json.dumps({"service": full_name}), address, "grpc.health.v1.Health/Check")
    )
    assert per_service == {"status": "SERVING"}


def test_edge_is_ready_and_reports_the_mesh_over_graphql(mesh: RunningMesh) -> None:
    assert httpx.get(mesh.edge_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(mesh.edge_url + "/readyz", headers={"X-Operator-Token": OPERATOR_TOKEN})
    assert ready.status_code == 200
    assert set(ready.json()["services"]) == set(SERVICES)
    answer = httpx.post(
        mesh.edge_url + "/graphql",
        json={"query": "{ mesh { name address status } }"},
        headers={"X-Operator-Token": OPERATOR_TOKEN},
    ).json()
    assert "errors" not in answer
    rows = {row["name"]: row for row in answer["data"]["mesh"]}
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(SERVICES, "SERVING")
    assert rows["model"]["address"] == mesh.addresses["model"]
    # Anyone else sees the health but not the internal addresses.
    anonymous = httpx.post(
        mesh.edge_url + "/graphql", json={"query": "{ mesh { name address status } }"}
    ).json()
    assert [row["address"] for row in anonymous["data"]["mesh"]] == [None] * len(SERVICES)
    # No GraphiQL (its CDN scripts are refused by the CSP); a query works over GET too.
    heroes = httpx.get(mesh.edge_url + "/graphql", params={"query": "{ heroes { id } }"})
    assert heroes.status_code == 200, heroes.text
    assert len(heroes.json()["data"]["heroes"]) > 100
    metrics = httpx.get(mesh.edge_url + "/metrics", headers={"X-Operator-Token": OPERATOR_TOKEN})
    assert "counterpick_edge_http_requests_total" in metrics.text


def test_a_bot_drafts_over_tls_with_grpcurl_as_the_readme_shows(mesh: RunningMesh) -> None:
    """The README's bot session: a signed-in user's API key, exchanged by the bot for a scoped
    token, then CreateDraft, WatchDraft and SubmitAction on the public TLS port."""

    def tls_grpcurl(service: str, method: str, body: dict[str, object], token: str = "") -> str:
        headers = ["-H", f"authorization: Bearer {token}"] if token else []
        result = subprocess.run(
            [
                GRPCURL,
                "-cacert",
                str(mesh.tls.ca_cert),
                *headers,
                "-d",
                json.dumps(body),
                f"localhost:{mesh.tls_ports[service]}",
                method,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout + result.stderr

    token = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "token",
            "--account-id",
            "123456",
            "--state-dir",
            str(mesh.state_dir),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()[-1]
    created = json.loads(
        tls_grpcurl(
            "auth",
            "counterpick.auth.v1.AuthService/CreateApiKey",
            {"name": "e2e bot", "scopes": ["draft:read", "draft:write"]},
            token,
        )
    )
    exchanged = json.loads(
        tls_grpcurl(
            "auth",
            "counterpick.auth.v1.AuthService/ExchangeApiKey",
            {"api_key": created["secret"]},
        )
    )
    bot = exchanged["access_token"]
    draft = json.loads(
        tls_grpcurl(
            "draft",
            "counterpick.draft.v1.DraftService/CreateDraft",
            {"mode": "DRAFT_MODE_CAPTAINS_MODE", "first_pick_side": "TEAM_SIDE_RADIANT"},
            bot,
        )
    )["draft"]
    watcher = subprocess.Popen(
        [
            GRPCURL,
            "-cacert",
            str(mesh.tls.ca_cert),
            "-H",
            f"authorization: Bearer {bot}",
            "-d",
            json.dumps({"draft_id": draft["draft_id"]}),
            f"localhost:{mesh.tls_ports['draft']}",
            "counterpick.draft.v1.DraftService/WatchDraft",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ban = {
            "draft_id": draft["draft_id"],
            "expected_sequence": 0,
            "action": {"kind": "DRAFT_ACTION_KIND_BAN", "side": "TEAM_SIDE_RADIANT", "hero_id": 1},
        }
        time.sleep(1)  # the watcher's snapshot first, so the action arrives live
        applied = json.loads(
            tls_grpcurl("draft", "counterpick.draft.v1.DraftService/SubmitAction", ban, bot)
        )
        assert applied["event"]["sequence"] == "1"
        again = tls_grpcurl("draft", "counterpick.draft.v1.DraftService/SubmitAction", ban, bot)
        assert "ERROR_REASON_VERSION_MISMATCH" in again
        time.sleep(1)
    finally:
        watcher.terminate()
        output, _ = watcher.communicate(timeout=10)
    assert '"snapshot"' in output
    assert '"action_applied"' in output
    assert output.index('"snapshot"') < output.index('"action_applied"')
    # Plaintext is not spoken on the public port.
    plaintext = subprocess.run(
        [GRPCURL, "-plaintext", f"127.0.0.1:{mesh.tls_ports['draft']}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert plaintext.returncode != 0


def test_each_service_exports_prometheus_metrics(mesh: RunningMesh) -> None:
    urls = re.findall(r"metrics (http://\S+/metrics)", mesh.banner)
    assert len(urls) == len(SERVICES)
    _grpcurl(mesh.addresses["draft"], "grpc.health.v1.Health/Check")
    for url in urls:
        text = httpx.get(url).text
        assert "counterpick_grpc_server_handled_total" in text, url


def test_status_command_reports_every_service_serving(mesh: RunningMesh) -> None:
    argv = [sys.executable, "-m", "services.cli", "status"]
    for name, address in mesh.addresses.items():
        argv += [f"--{name}-port", address.rsplit(":", 1)[1]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SERVING") == len(SERVICES)


def _status(mesh: RunningMesh) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "services.cli", "status", "--state-dir", str(mesh.state_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_a_killed_service_is_restarted_and_status_shows_it(mesh: RunningMesh) -> None:
    state = MeshState.read(mesh.state_dir)
    assert state is not None
    assert state.supervisor_pid == mesh.process.pid
    etl = state.children["etl"]
    assert (etl.restarts, etl.state, etl.address) == (0, "running", mesh.addresses["etl"])
    assert etl.pid is not None
    os.kill(etl.pid, signal.SIGKILL)
    deadline = time.monotonic() + 120
    while True:
        assert mesh.process.poll() is None, "counterpick up stopped when a child died"
        assert time.monotonic() < deadline, "etl was not restarted and serving within 120 s"
        now = MeshState.read(mesh.state_dir)
        restarted = now is not None and now.children["etl"].restarts == 1
        if restarted and check_serving(mesh.addresses["etl"]):
            break
        time.sleep(0.5)
    assert now is not None
    assert now.children["etl"].pid != etl.pid
    assert now.children["etl"].last_exit_code == -signal.SIGKILL
    # The others kept running, untouched.
    for name in SERVICES:
        if name != "etl":
            assert now.children[name].restarts == 0, name
            assert now.children[name].pid == state.children[name].pid, name
    status = _status(mesh)
    assert status.returncode == 0, status.stdout + status.stderr
    line = next(row for row in status.stdout.splitlines() if row.startswith("etl "))
    assert "SERVING" in line
    assert "restarts 1" in line
    assert "last exit signal SIGKILL" in line
    log = (mesh.state_dir / "logs" / "etl.log").read_text()
    assert "counterpick up: etl exited with signal SIGKILL; restarting" in log


def check_serving(address: str) -> bool:
    result = subprocess.run(
        [GRPCURL, "-plaintext", "-max-time", "3", address, "grpc.health.v1.Health/Check"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0 and '"SERVING"' in result.stdout


def test_sigterm_stops_everything_and_leaves_no_process(mesh: RunningMesh) -> None:
    # Last in the module: it ends the mesh the other tests used.
    family = psutil.Process(mesh.process.pid).children(recursive=True)
    names = {" ".join(p.cmdline()[1:3]) for p in family if p.is_running()}
    assert any("services." in name for name in names), names
    mesh.process.send_signal(signal.SIGTERM)
    assert mesh.process.wait(timeout=60) == 0
    _, alive = psutil.wait_procs(family, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]
