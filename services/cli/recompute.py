"""`counterpick recompute`: recompute statistics and models now, with progress, and list runs.

Without a running mesh the run happens in this process and publishes its snapshot to Redis,
where model replicas pick it up through the change notice. While `counterpick up` runs in the
state directory, its model does the run (ModelService.Recompute as the operator): the model is the
one service allowed per-player warehouse reads, and it already holds what a run needs; this
command waits for the run and shows how it ended.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import redis.asyncio as aioredis
from tqdm import tqdm

from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from services.cli.importing import warehouse_dsn
from services.cli.mesh_state import deployment_for, running_address
from services.cli.mesh_state import etl_address as mesh_etl_address
from services.cli.token import operator_metadata
from services.common.channels import open_channel
from services.common.dota_constants import load_constants
from services.common.service_tokens import StaticMetadata
from services.common.warehouse import WarehouseReader, open_reader
from services.common.warehouse.etl_rpc import EtlReader
from services.model.recompute import Recomputer
from services.model.repo import SnapshotStore
from services.model.snapshot import RunRecord


def _source(state_dir: Path, etl_address: str) -> WarehouseReader:
    dsn = warehouse_dsn(state_dir)
    try:
        reader = open_reader(dsn, etl_address, etl_when_locked=True)
    except Exception as error:
        raise SystemExit(f"cannot open the warehouse {dsn}: {error}") from None
    if isinstance(reader, EtlReader):
        print(f"the warehouse is held by a running etl; reading it through {etl_address}")
        # etl's ReadWarehouse needs an admin or service token: the operator's, not a service's.
        reader.authorize(StaticMetadata(operator_metadata(state_dir)))
    return reader


def format_runs(runs: list[RunRecord]) -> str:
    """The runs as a table, newest first."""
    lines = [
        f"{'run':<13} {'started (UTC)':<20} {'mode':<12} {'status':<10} {'seconds':>8} "
        f"{'matches':>9} {'snapshot':>8}  patches"
    ]
    for run in runs:
        seconds = f"{run.finished_at - run.started_at:.1f}" if run.finished_at else "-"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.started_at))
        patches = ", ".join(
            f"{name} ({brackets.get('all', 0)})" for name, brackets in sorted(run.coverage.items())
        )
        lines.append(
            f"{run.run_id:<13} {started:<20} {run.mode:<12} {run.status:<10} {seconds:>8} "
            f"{run.matches_used:>9} {run.snapshot_version or '-':>8}  {patches or run.error}"
        )
    return "\n".join(lines)


# A run over the bundled seed takes well under a minute; a production warehouse much longer.
MESH_RUN_TIMEOUT_SECONDS = 3600.0


async def _recompute_in_mesh(model_address: str, state_dir: Path, store: SnapshotStore) -> int:
    """Have the running mesh's model recompute; wait for a run that ends after the request."""
    asked = time.time()
    async with open_channel(model_address) as channel:
        answer = await model_grpc.ModelServiceStub(channel).Recompute(
            model_pb.RecomputeRequest(), metadata=operator_metadata(state_dir), timeout=60
        )
    state = "was already recomputing" if answer.already_running else "is recomputing"
    print(f"the running mesh's model at {model_address} {state} ({answer.job_id})")
    deadline = time.monotonic() + MESH_RUN_TIMEOUT_SECONDS
    with tqdm(desc="recompute", unit="s", leave=True) as bar:
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            bar.update(1)
            ended = [r for r in await store.runs() if r.finished_at and r.finished_at >= asked]
            if ended:
                run = ended[0]
                bar.close()
                if run.status != "succeeded":
                    print(f"recompute failed: {run.error}")
                    return 1
                print(f"published snapshot {run.snapshot_version} from {run.matches_used} matches")
                return 0
    print(f"recompute: no run ended within {MESH_RUN_TIMEOUT_SECONDS:.0f} s")
    return 1


def run_recompute(state_dir: Path, *, full: bool, list_only: bool, redis_url: str | None) -> int:
    """Run (or only list) recomputes; exit code 0 on success."""
    url = redis_url or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    etl_address = mesh_etl_address(state_dir)

    async def main() -> int:
        redis = aioredis.Redis.from_url(url, socket_connect_timeout=3)
        store = SnapshotStore(redis, deployment_for(state_dir))
        try:
            try:
                await redis.ping()
            except (OSError, aioredis.RedisError) as error:
                print(f"Redis at {url} is unreachable: {error}")
                return 1
            model_address = running_address(state_dir, "model")
            if not list_only and model_address is not None:
                if full:
                    print("--full needs the mesh stopped: the running model recounts incrementally")
                    return 2
                status = await _recompute_in_mesh(model_address, state_dir, store)
                print(format_runs(await store.runs()))
                return status
            if not list_only:
                source = await asyncio.to_thread(_source, state_dir, etl_address)
                recomputer = Recomputer(source, store, load_constants())
                with tqdm(total=100, unit="%", desc="recompute", leave=True) as bar:

                    def progress(stage: str, fraction: float) -> None:
                        bar.set_postfix_str(stage)
                        bar.update(max(0, round(fraction * 100) - bar.n))

                    try:
                        run = await recomputer.run(full=full, progress=progress)
                    except Exception as error:
                        bar.close()
                        print(f"recompute failed: {error}")
                        return 1
                    finally:
                        source.close()
                print(f"published snapshot {run.snapshot_version} from {run.matches_used} matches")
            print(format_runs(await store.runs()))
            return 0
        finally:
            await redis.aclose()

    return asyncio.run(main())
