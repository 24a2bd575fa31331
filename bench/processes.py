"""The service processes the draft benchmarks start (bench.draft, bench.fanout): auth and draft
replicas as `python -m services.<name>` on free ports, quiet and quick to stop, and the wait for
them to serve. One place, so both benches measure the same set-up."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from services.cli.health import wait_until_serving
from services.cli.processes import ManagedProcess


def quiet_env(redis_url: str) -> dict[str, str]:
    """Settings every benchmarked process shares: the bench's Redis, no exporters, few logs."""
    return {
        "REDIS_URL": redis_url,
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
        "LOG_FORMAT": "text",
        "LOG_LEVEL": "WARNING",
        "SHUTDOWN_GRACE_SECONDS": "1",
    }


def auth_process(
    workdir: Path,
    env: dict[str, str],
    *,
    port: int,
    keys_dir: Path,
    accepted_credentials: Path | None = None,
) -> ManagedProcess:
    """The auth service signing with `keys_dir` (it publishes them for the others' verifiers)
    and accepting the service credentials whose hashes `accepted_credentials` lists."""
    extra = {"AUTH_SERVICE_CREDENTIALS_FILE": str(accepted_credentials)}
    return ManagedProcess(
        "auth",
        [sys.executable, "-m", "services.auth"],
        workdir / "auth.log",
        {
            **env,
            "PORT": str(port),
            "AUTH_KEYS_DIR": str(keys_dir),
            "POSTGRES_DSN": os.environ.get(
                "TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
            ),
            **(extra if accepted_credentials is not None else {}),
        },
    )


def draft_process(
    name: str,
    workdir: Path,
    env: dict[str, str],
    *,
    port: int,
    auth_port: int,
    unused_port: int,
    calls_per_minute: int,
    max_concurrent_rpcs: int,
) -> ManagedProcess:
    """A draft replica verifying tokens at auth. Model and user point at `unused_port`, where
    nothing listens: suggestions are skipped, so the draft's own fan-out is what is measured.
    Its rate limit and concurrent-call cap are raised: one bench user makes every call."""
    return ManagedProcess(
        name,
        [sys.executable, "-m", "services.draft"],
        workdir / f"{name}.log",
        {
            **env,
            "PORT": str(port),
            "AUTH_ADDR": f"127.0.0.1:{auth_port}",
            "MODEL_ADDR": f"127.0.0.1:{unused_port}",
            "USER_ADDR": f"127.0.0.1:{unused_port}",
            "RATE_LIMIT_FREE_PER_MINUTE": str(calls_per_minute),
            "GRPC_MAX_CONCURRENT_RPCS": str(max_concurrent_rpcs),
        },
    )


async def wait_serving(process: ManagedProcess, port: int, timeout_seconds: float = 60) -> None:
    """Until the process's gRPC health says SERVING; raises with its log if it exits or not."""
    waiter = asyncio.ensure_future(
        wait_until_serving(f"127.0.0.1:{port}", timeout_seconds=timeout_seconds)
    )
    while not waiter.done():
        if process.exit_code() is not None:
            waiter.cancel()
            raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
        await asyncio.sleep(0.1)
    if not waiter.result():
        raise RuntimeError(f"{process.name} did not start:\n{process.log_tail()}")
