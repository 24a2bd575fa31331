"""bench.edge: suggestPicks through the edge's GraphQL vs the same call straight to ModelService.

`counterpick up` runs the whole mesh on a fresh state directory (it seeds the warehouse from the
bundled 2026-07 public matches and recomputes, so suggestions are real); this client then asks
for pick suggestions for one mid-draft state, the same request both ways, one path after the
other in one run: through GraphQL at /graphql (HTTP/1.1 keep-alive, httpx) and straight over gRPC
(one channel), at concurrency 1 and 32. Both carry the same service token, so neither path is
throttled by the services' per-user rate limits (the edge forwards the caller's token to the
model), and the edge's own request quotas are off for the run (EDGE_RATE_LIMIT_ENABLED=false).
Clients and servers share this machine's 2 cores.

Targets: at concurrency 1 the edge adds at most 1.5 ms at p50; at 32 GraphQL serves at least
800 requests/s.
Run: `uv run python -m bench.edge [--requests 2000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import httpx
import numpy as np

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from services.cli.up import SERVICES

# Importing tests.conftest claims this run's own Redis database (released at exit).
from tests.conftest import REDIS_CLAIM_ERROR, REDIS_URL, REPO_ROOT, free_port

TARGET_ADDED_P50_MS = 1.5
TARGET_GRAPHQL_RPS = 800.0
READY_SECONDS = 300.0
# Two bans and two picks each: a draft state in the middle of a real draft.
DRAFT = [
    (c.DRAFT_ACTION_KIND_BAN, c.TEAM_SIDE_RADIANT, 1),
    (c.DRAFT_ACTION_KIND_BAN, c.TEAM_SIDE_DIRE, 2),
]
DRAFT += [
    (c.DRAFT_ACTION_KIND_PICK, c.TEAM_SIDE_RADIANT, 14),
    (c.DRAFT_ACTION_KIND_PICK, c.TEAM_SIDE_DIRE, 8),
]
QUERY = """
query Suggest($draft: DraftStateInput!) {
  suggestPicks(draft: $draft, side: RADIANT, limit: 10) {
    winProbability
    picks { hero { id localizedName } score reasons { text } }
  }
}
"""
_KIND = {c.DRAFT_ACTION_KIND_BAN: "BAN", c.DRAFT_ACTION_KIND_PICK: "PICK"}
_SIDE = {c.TEAM_SIDE_RADIANT: "RADIANT", c.TEAM_SIDE_DIRE: "DIRE"}


class Mesh:
    """`counterpick up` on free ports and a fresh state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.edge_port = free_port()
        self.ports = {name: free_port() for name in SERVICES}
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "services.cli", "up", "--state-dir", str(self.state_dir)]
        argv += ["--edge-port", str(self.edge_port), "--kafka-port", str(free_port())]
        for name, port in self.ports.items():
            argv += [f"--{name}-port", str(port)]
        env = {**os.environ, "REDIS_URL": REDIS_URL}
        # One client sends thousands of requests a minute on purpose: the edge's own per-address
        # and per-token quotas (429) would measure the limiter, not the edge.
        env["EDGE_RATE_LIMIT_ENABLED"] = "false"
        # No internet here: ingest polls a port where nothing listens.
        env["OPENDOTA_BASE_URL"] = f"http://127.0.0.1:{free_port()}/api"
        self.process = subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        lines = []
        for line in self.process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                return
        raise RuntimeError("counterpick up exited:\n" + "".join(lines))

    def token(self) -> str:
        minted = subprocess.run(
            [
                *(sys.executable, "-m", "services.cli", "token", "--account-id", "1"),
                *("--role", "service", "--ttl-seconds", "3600", "--state-dir", str(self.state_dir)),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return minted.stdout.splitlines()[-1]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def grpc_request() -> model_pb.SuggestPicksRequest:
    actions = [
        c.DraftAction(order=i, kind=kind, side=side, hero_id=hero)
        for i, (kind, side, hero) in enumerate(DRAFT)
    ]
    return model_pb.SuggestPicksRequest(
        draft=c.DraftState(actions=actions), side=c.TEAM_SIDE_RADIANT, limit=10
    )


def graphql_body() -> dict[str, object]:
    actions = [
        {"kind": _KIND[kind], "side": _SIDE[side], "heroId": hero} for kind, side, hero in DRAFT
    ]
    return {"query": QUERY, "variables": {"draft": {"actions": actions}}}


async def wait_ready(
    stub: model_grpc.ModelServiceAsyncStub, metadata: tuple[tuple[str, str], ...]
) -> float:
    """Seconds until SuggestPicks answers (the first start seeds and recomputes)."""
    started = time.monotonic()
    while time.monotonic() - started < READY_SECONDS:
        try:
            await stub.SuggestPicks(grpc_request(), metadata=metadata, timeout=5)
            return time.monotonic() - started
        except grpc.aio.AioRpcError:
            await asyncio.sleep(1)
    raise RuntimeError(f"no suggestions within {READY_SECONDS:g} s")


async def measure(
    call: Callable[[], Awaitable[None]], concurrency: int, requests: int
) -> dict[str, float]:
    """p50/p99 of `requests` calls made by `concurrency` workers, and the rate they achieved."""
    for _ in range(min(50, requests)):
        await call()  # warm-up: connections, caches
    latencies: list[float] = []
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    wall = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - wall
    return {
        "p50 ms": float(np.percentile(latencies, 50)),
        "p99 ms": float(np.percentile(latencies, 99)),
        "req/s": len(latencies) / wall,
    }


async def run(mesh: Mesh, requests: int) -> list[tuple[str, dict[str, float]]]:
    token = mesh.token()
    metadata = (("authorization", f"Bearer {token}"),)
    rows: list[tuple[str, dict[str, float]]] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['model']}") as channel:
        stub = model_grpc.ModelServiceStub(channel)
        ready = await wait_ready(stub, metadata)
        print(f"suggestions ready {ready:.0f} s after the mesh answered", file=sys.stderr)
        request = grpc_request()

        async def via_grpc() -> None:
            await stub.SuggestPicks(request, metadata=metadata, timeout=10)

        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{mesh.edge_port}",
            headers={"authorization": f"Bearer {token}"},
            limits=limits,
            timeout=10,
        ) as http:
            body = graphql_body()
            probe = (await http.post("/graphql", json=body)).json()
            if probe.get("errors") or not probe["data"]["suggestPicks"]["picks"]:
                raise RuntimeError(f"the GraphQL query failed: {probe}")

            async def via_graphql() -> None:
                answer = await http.post("/graphql", json=body)
                if answer.status_code != 200 or b'"errors"' in answer.content:
                    raise RuntimeError(
                        f"GraphQL answered {answer.status_code}: {answer.text[:200]}"
                    )

            for concurrency in (1, 32):
                rows.append(
                    (f"graphql c={concurrency}", await measure(via_graphql, concurrency, requests))
                )
                rows.append(
                    (f"grpc c={concurrency}", await measure(via_grpc, concurrency, requests))
                )
    return rows


def report(rows: list[tuple[str, dict[str, float]]]) -> None:
    columns = ["p50 ms", "p99 ms", "req/s"]
    print(f"{'path':<14} " + " ".join(f"{name:>10}" for name in columns))
    order = ["graphql c=1", "graphql c=32", "grpc c=1", "grpc c=32"]
    figures = dict(rows)
    for name in order:
        print(f"{name:<14} " + " ".join(f"{figures[name][col]:>10.2f}" for col in columns))
    added = figures["graphql c=1"]["p50 ms"] - figures["grpc c=1"]["p50 ms"]
    ratio = figures["graphql c=1"]["p50 ms"] / figures["grpc c=1"]["p50 ms"]
    rps = figures["graphql c=32"]["req/s"]
    print()
    print(
        f"edge adds {added:.2f} ms at p50, c=1 (graphql/grpc p50 = {ratio:.2f}x; target <= "
        f"{TARGET_ADDED_P50_MS:g} ms: {'met' if added <= TARGET_ADDED_P50_MS else 'missed'})"
    )
    print(
        f"graphql at c=32: {rps:.0f} req/s (target >= {TARGET_GRAPHQL_RPS:g}: "
        f"{'met' if rps >= TARGET_GRAPHQL_RPS else 'missed'})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per path and concurrency")
    arguments = parser.parse_args()
    if REDIS_CLAIM_ERROR:
        print(REDIS_CLAIM_ERROR, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-edge-") as tmp:
        mesh = Mesh(Path(tmp) / "state")
        try:
            mesh.start()
            rows = asyncio.run(run(mesh, arguments.requests))
        finally:
            mesh.stop()
    report(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
