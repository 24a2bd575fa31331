"""`counterpick up`: the whole mesh on this machine, with its stores, until Ctrl-C or SIGTERM.

Children that die are restarted by `supervisor.py`; `mesh.json` in the state dir says how they
are doing, for `counterpick status`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.cli.credentials import provision
from services.cli.health import wait_until_serving
from services.cli.local_stores import LocalStores, free_port, port_is_free
from services.cli.mesh_state import deployment_for
from services.cli.processes import ManagedProcess, stop_all
from services.cli.seeding import seed_first_start
from services.cli.supervisor import Supervisor
from services.common.config import DEFAULT_GRPC_PORTS
from services.common.errors import CounterpickError

SERVICES = tuple(DEFAULT_GRPC_PORTS)
EDGE_PORT = 8000
READY_TIMEOUT_SECONDS = 90.0
# Services drain in-flight calls for up to 5 s (SHUTDOWN_GRACE_SECONDS); allow a little more.
STOP_GRACE_SECONDS = 8.0


# Who gets a service credential: every service that calls another (all but auth, which signs
# its own) and the edge ("gateway"), which calls as itself for the shared draft feed and GSI.
CREDENTIAL_HOLDERS = [*(name for name in SERVICES if name != "auth"), "gateway"]

# The services bots and tools call from outside (draft rooms, model reads, API-key exchange) and
# the TLS port each serves when `up` is given a certificate.
PUBLIC_TLS_PORTS = {"draft": 50443, "model": 50444, "auth": 50445}


@dataclass
class MeshPlan:
    """Where each part of the mesh listens."""

    host: str = "127.0.0.1"
    edge_port: int = EDGE_PORT
    grpc_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRPC_PORTS))
    state_dir: Path = Path(".counterpick")
    kafka_port: int = 9092
    embedded_stores: bool = False
    # The public API's TLS: certificate chain and key (PEM), and the TLS port of each public
    # service. Their plain ports stay plaintext for the mesh's own calls.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ports: dict[str, int] = field(default_factory=lambda: dict(PUBLIC_TLS_PORTS))
    # Load the bundled seed into an empty warehouse once the services serve (seeding.py).
    seed: bool = True

    def address(self, service: str) -> str:
        """host:port of one gRPC service."""
        return f"{self.host}:{self.grpc_ports[service]}"

    def busy_ports(self) -> list[str]:
        """Human-readable list of requested ports already taken by something else."""
        wanted = {"edge": self.edge_port, **self.grpc_ports}
        return [
            f"{name} {port}" for name, port in wanted.items() if not port_is_free(port, self.host)
        ]


class Mesh:
    """Starts the stores, the six services and the edge; stops them all in reverse order."""

    def __init__(self, plan: MeshPlan) -> None:
        self.plan = plan
        self.stores = LocalStores(
            plan.state_dir, kafka_port=plan.kafka_port, force_embedded=plan.embedded_stores
        )
        self.services: dict[str, ManagedProcess] = {}
        self.edge: ManagedProcess | None = None
        self.metrics_ports: dict[str, int] = {}
        self.supervisor = Supervisor(plan.state_dir)

    async def start(self) -> None:
        """Bring everything up; raises RuntimeError naming the part that failed."""
        store_env = await self.stores.start()
        # Every process of this mesh, the edge included, keys Redis under this deployment.
        store_env["DEPLOYMENT"] = deployment_for(self.plan.state_dir)
        peers = {f"{name.upper()}_ADDR": self.plan.address(name) for name in SERVICES}
        logs = self.plan.state_dir / "logs"
        # Every service but auth calls its peers as itself (services/common/service_tokens.py).
        credentials, accepted = provision(self.plan.state_dir, CREDENTIAL_HOLDERS)
        # A probed free port is only free until someone binds it: never hand out one of this
        # mesh's own ports that a later process will bind (the edge, a service not yet started).
        claimed = {
            self.plan.edge_port,
            self.plan.kafka_port,
            *self.plan.grpc_ports.values(),
            *self.plan.tls_ports.values(),
        }
        for name in SERVICES:
            port = free_port()
            while port in claimed:
                port = free_port()
            claimed.add(port)
            self.metrics_ports[name] = port
            env = {
                **store_env,
                **peers,
                "HOST": self.plan.host,
                # The edge runs here and calls on behalf of browsers (see rate_limit.py).
                "RATE_LIMIT_TRUSTED_PROXIES": "127.0.0.1,::1",
                "PORT": str(self.plan.grpc_ports[name]),
                "METRICS_PORT": str(self.metrics_ports[name]),
                "OTEL_SERVICE_NAME": f"counterpick-{name}",
                # The auth service's signing keys live with the rest of the local state.
                "AUTH_KEYS_DIR": str((self.plan.state_dir / "auth-keys").resolve()),
            }
            if self.plan.tls_cert is not None and name in self.plan.tls_ports:
                env["TLS_CERT_FILE"] = str(self.plan.tls_cert.resolve())
                env["TLS_KEY_FILE"] = str(self.plan.tls_key.resolve()) if self.plan.tls_key else ""
                env["TLS_PORT"] = str(self.plan.tls_ports[name])
            if name == "auth":
                env["AUTH_SERVICE_CREDENTIALS_FILE"] = str(accepted)
            else:
                env["SERVICE_CREDENTIAL_FILE"] = str(credentials[name])
            process = ManagedProcess(
                name, [sys.executable, "-m", f"services.{name}"], logs / f"{name}.log", env
            )
            process.start()
            self.services[name] = process
        await asyncio.gather(*(self._wait_serving(name) for name in SERVICES))
        for name in SERVICES:
            self.supervisor.add(self.services[name], self.plan.address(name))
        self.edge = ManagedProcess(
            "edge",
            [sys.executable, "-m", "gateway"],
            logs / "edge.log",
            {
                **peers,
                # The edge verifies tokens too, and consults the same deny list.
                **{k: v for k, v in store_env.items() if k in {"REDIS_URL", "DEPLOYMENT"}},
                "HOST": self.plan.host,
                "PORT": str(self.plan.edge_port),
                "OTEL_SERVICE_NAME": "counterpick-edge",
                # The edge calls as itself for the shared draft feed and GSI mirror drafts.
                "SERVICE_CREDENTIAL_FILE": str(credentials["gateway"]),
            },
        )
        self.edge.start()
        await self._wait_edge_ready()
        self.supervisor.add(self.edge, f"{self.plan.host}:{self.plan.edge_port}")

    async def _wait_serving(self, name: str) -> None:
        process = self.services[name]
        waiter = asyncio.ensure_future(
            wait_until_serving(self.plan.address(name), timeout_seconds=READY_TIMEOUT_SECONDS)
        )
        while not waiter.done():
            if process.exit_code() is not None:
                waiter.cancel()
                raise RuntimeError(
                    f"{name} exited with code {process.exit_code()} while starting; "
                    f"last log lines ({process.log_path}):\n{process.log_tail()}"
                )
            await asyncio.sleep(0.1)
        if not waiter.result():
            raise RuntimeError(f"{name} did not report SERVING within {READY_TIMEOUT_SECONDS:g}s")

    async def _wait_edge_ready(self) -> None:
        assert self.edge is not None
        url = f"http://{self.plan.host}:{self.plan.edge_port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                if self.edge.exit_code() is not None:
                    raise RuntimeError(
                        f"edge exited with code {self.edge.exit_code()} while starting; "
                        f"last log lines ({self.edge.log_path}):\n{self.edge.log_tail()}"
                    )
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"edge was not ready at {url} within {READY_TIMEOUT_SECONDS:g}s")

    def stop(self) -> None:
        """Edge first (no new traffic), then services (drain), then the stores they used."""
        self.supervisor.stopping()
        if self.edge is not None:
            stop_all([self.edge], STOP_GRACE_SECONDS)
        stop_all(list(self.services.values()), STOP_GRACE_SECONDS)
        self.stores.stop()

    def endpoint_table(self, ready_seconds: float) -> str:
        """The table printed once the mesh is ready."""
        host = self.plan.host
        rows = [
            (
                "edge",
                f"http://{host}:{self.plan.edge_port}/graphql",
                "GraphiQL, /healthz, /readyz, /metrics",
            )
        ]
        for name in SERVICES:
            rows.append(
                (
                    name,
                    self.plan.address(name),
                    f"gRPC counterpick.{name}.v1; metrics http://{host}:{self.metrics_ports[name]}/metrics",
                )
            )
            if self.plan.tls_cert is not None and name in self.plan.tls_ports:
                rows.append((f"{name} (TLS)", f"{host}:{self.plan.tls_ports[name]}", "public gRPC"))
        for info in self.stores.infos:
            rows.append((info.name, info.address, info.origin))
        width = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [
            f"counterpick is up in {ready_seconds:.1f}s (logs: {self.plan.state_dir / 'logs'})",
            "",
        ]
        lines += [f"  {a:<{width[0]}}  {b:<{width[1]}}  {c}" for a, b, c in rows]
        lines += [
            "",
            f"  try: grpcurl -plaintext {self.plan.address('model')} list",
            "",
            "Ctrl-C stops everything.",
        ]
        return "\n".join(lines)


def _report_seeding_failure(task: asyncio.Future[bool]) -> None:
    if not task.cancelled() and task.exception() is not None:
        print(f"counterpick up: seeding failed: {task.exception()!r}", file=sys.stderr)


async def run_up(plan: MeshPlan) -> int:
    """Start the mesh, print its endpoints, keep its children running (restarting one that
    dies), and stop it all cleanly on a signal. A child that dies while the mesh starts fails
    the start: that is a configuration problem, not a crash to retry."""
    # The supervisor's own output is the table; libraries only speak up when something is wrong.
    logging.basicConfig(level=logging.WARNING, format="counterpick up: %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    busy = plan.busy_ports()
    if busy:
        print(
            f"counterpick up: ports already in use: {', '.join(busy)}; "
            "stop what holds them or pass --edge-port / --<service>-port",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    mesh = Mesh(plan)
    exit_code = 0
    seeding: asyncio.Future[bool] | None = None
    try:
        print("starting stores and services...", file=sys.stderr, flush=True)
        start = asyncio.ensure_future(mesh.start())
        stopper = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait([start, stopper], return_when=asyncio.FIRST_COMPLETED)
        if not start.done():
            start.cancel()
            return 130
        stopper.cancel()
        start.result()
        print(mesh.endpoint_table(time.monotonic() - started), flush=True)
        if plan.seed:
            seeding = asyncio.ensure_future(
                seed_first_start(plan.state_dir, plan.address("etl"), plan.address("model"))
            )
            seeding.add_done_callback(_report_seeding_failure)
        while not stop_requested.is_set():
            # A child that died is restarted (with backoff); the rest keep serving.
            mesh.supervisor.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), timeout=0.5)
    except (RuntimeError, CounterpickError) as error:
        print(f"counterpick up: {error}", file=sys.stderr)
        exit_code = 1
    finally:
        if seeding is not None:
            seeding.cancel()
        print("stopping...", file=sys.stderr, flush=True)
        await asyncio.to_thread(mesh.stop)
        print("stopped.", file=sys.stderr, flush=True)
    return exit_code
