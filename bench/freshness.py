"""bench.freshness: how long after a match ends it is published, stored by etl, and counted in
the model's served snapshot.

The feed replayer serves real 2026-07 public matches on a virtual clock running --speedup times
faster than life (a match is listed when it ends, as OpenDota lists it); the real ingest, etl and
model processes run against tansu, embedded chdb (owned by etl; the model reads it through etl's
ReadWarehouse, as itself: an auth process exchanges its service credential) and Redis
(tests/replay_pipeline.py, with the model as its companion); auth keeps its API keys in
PostgreSQL (TEST_POSTGRES_DSN). Per match:

  published: the reader of the Kafka topic first saw its MatchRef;
  stored: etl's committed offset on its partition passed the record (etl commits after the
      warehouse insert), sampled every 0.2 s through GetEtlStatus;
  in snapshot: the model's served snapshot counts it, sampled every 0.5 s through GetModelInfo.
      A recompute run counts exactly the matches loaded up to its watermark
      (RecomputeRun.loaded_until), so a match counts at the first sample whose served snapshot
      came from a run with loaded_until >= the match's loaded_at in the warehouse. Exact, not the
      "first N stored" approximation.

Latencies are wall seconds from the moment the replay clock reached the match's end. `published`
and `stored` include OpenDota's own quirk (the newest finished match is listed only once a newer
one finishes; at the replay's speed-up that wait is --speedup times shorter than in life) and the
ingest poll interval (--idle-seconds; the production default is 30 s). `in snapshot` adds the
model's scheduled recompute, which runs on real wall time: MODEL_RECOMPUTE_INTERVAL_SECONDS at its
production default of 60 s (--recompute-seconds), so it is the figure as shipped, plus the run
itself. The model starts cold with the pipeline (its first, full run waits for the first stored
matches and retries every 30 s), and the play lasts several intervals so the schedule's phase
averages out. Target: in snapshot p95 <= 120 s.
Run: `uv run python -m bench.freshness [--speedup 10 --play-seconds 3600 --every 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from tests.auth_keys import SigningKeys
from tests.feed_replayer import load_public_matches, match_end
from tests.replay_pipeline import REPO_ROOT, ReplayResult, replay_through_pipeline, tail

# The production default of MODEL_RECOMPUTE_INTERVAL_SECONDS (services/model/config.py).
DEFAULT_RECOMPUTE_SECONDS = 60.0
SAMPLE_SECONDS = 0.5
TARGET_P95_SECONDS = 120.0


class ModelBeside:
    """`python -m services.model` reading the replay's etl, and a GetModelInfo sampler.

    The model reads etl as itself, as in the mesh: an auth process (signing with the replay's
    keys, the ones etl verifies) exchanges the model's service credential for its tokens.

    Samples are (time.monotonic(), served snapshot version); `loaded_until_ms` maps each
    published snapshot version to its run's watermark (unix milliseconds)."""

    def __init__(
        self, *, redis_url: str, postgres_dsn: str, recompute_seconds: float, workdir: Path
    ) -> None:
        from tests.conftest import free_port

        self.redis_url = redis_url
        self.postgres_dsn = postgres_dsn
        self.recompute_seconds = recompute_seconds
        self.workdir = workdir
        self.log = workdir / "model.log"
        self.auth_log = workdir / "auth.log"
        self.port = free_port()
        self.auth_port = free_port()
        self.samples: list[tuple[float, int]] = []
        self.loaded_until_ms: dict[int, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._auth: subprocess.Popen[bytes] | None = None
        self._sampler: asyncio.Task[None] | None = None

    async def start(self, etl_port: int, keys: SigningKeys) -> None:
        """Start auth, then the model process and the sampler."""
        from services.cli.credentials import provision
        from services.cli.health import wait_until_serving
        from tests.conftest import free_port

        assert keys.directory is not None, "auth needs the keys' directory"
        credentials, accepted = provision(self.workdir, ["model"])
        common = {
            "REDIS_URL": self.redis_url,
            "AUTH_ADDR": f"127.0.0.1:{self.auth_port}",
            "SHUTDOWN_GRACE_SECONDS": "2",
            "OTEL_TRACES_EXPORTER": "none",
            "LOG_FORMAT": "text",
        }
        auth_env = {
            **common,
            "PORT": str(self.auth_port),
            "POSTGRES_DSN": self.postgres_dsn,
            "AUTH_KEYS_DIR": str(keys.directory),
            "AUTH_GENERATE_KEY": "false",
            "AUTH_SERVICE_CREDENTIALS_FILE": str(accepted),
            # Logins never happen here; the user service is not needed.
            "USER_ADDR": f"127.0.0.1:{free_port()}",
        }
        self._auth = await asyncio.to_thread(self._spawn, "services.auth", auth_env, self.auth_log)
        if not await wait_until_serving(f"127.0.0.1:{self.auth_port}", timeout_seconds=60):
            raise RuntimeError(f"auth did not start\n--- auth:\n{tail(self.auth_log)}")
        env = {
            **common,
            "PORT": str(self.port),
            "ETL_ADDR": f"127.0.0.1:{etl_port}",
            "MODEL_RECOMPUTE_INTERVAL_SECONDS": f"{self.recompute_seconds:g}",
            "SERVICE_CREDENTIAL_FILE": str(credentials["model"]),
        }
        self._process = await asyncio.to_thread(self._spawn, "services.model", env, self.log)
        self._sampler = asyncio.create_task(self._sample())

    @staticmethod
    def _spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as handle:
            return subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO_ROOT,
                env={**os.environ, **env},
                stdout=handle,
                stderr=handle,
            )

    def failure(self) -> str | None:
        """The model or auth process exited, with its log."""
        if self._process is not None and self._process.poll() is not None:
            return f"model exited\n--- model:\n{tail(self.log)}"
        if self._auth is not None and self._auth.poll() is not None:
            return f"auth exited\n--- auth:\n{tail(self.auth_log)}"
        return None

    async def _sample(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = model_grpc.ModelServiceStub(channel)
            while True:
                try:
                    info = await stub.GetModelInfo(model_pb.GetModelInfoRequest(), timeout=2)
                except grpc.aio.AioRpcError:
                    pass  # starting, or no snapshot yet (FAILED_PRECONDITION)
                else:
                    for run in info.recent_runs:
                        if run.snapshot_version and run.HasField("loaded_until"):
                            # Rounded, not truncated: the server's Timestamp comes from float
                            # seconds (….362 arrives as ….361999872).
                            self.loaded_until_ms[run.snapshot_version] = round(
                                run.loaded_until.ToNanoseconds() / 1e6
                            )
                    if info.HasField("snapshot"):
                        self.samples.append((time.monotonic(), info.snapshot.version))
                await asyncio.sleep(SAMPLE_SECONDS)

    def served_watermark_ms(self) -> int | None:
        """The watermark of the snapshot served at the latest sample, if known."""
        return self.loaded_until_ms.get(self.samples[-1][1]) if self.samples else None

    async def settle(self, etl_port: int, keys: SigningKeys) -> None:
        """Wait until the served snapshot counts everything etl stored."""
        from services.common.service_tokens import StaticToken
        from services.common.warehouse.etl_rpc import EtlReader

        reader = EtlReader(f"127.0.0.1:{etl_port}", tokens=StaticToken(keys.token("admin")))
        try:
            latest = await asyncio.to_thread(reader.latest_loaded_at)
        finally:
            await asyncio.to_thread(reader.close)
        if latest is None:
            return
        final_ms = round(latest.timestamp() * 1000)
        while (served := self.served_watermark_ms()) is None or served < final_ms:
            if (problem := self.failure()) is not None:
                raise RuntimeError(problem)
            await asyncio.sleep(SAMPLE_SECONDS)

    async def stop(self) -> None:
        """Stop the sampler, the model and auth."""
        if self._sampler is not None:
            self._sampler.cancel()
            await asyncio.gather(self._sampler, return_exceptions=True)
        for process in (self._process, self._auth):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    await asyncio.to_thread(process.wait, 30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    await asyncio.to_thread(process.wait, 10)

    def counted_at(self, loaded_at_ms: dict[int, int]) -> dict[int, float]:
        """Per match, the first sample whose served snapshot's watermark covers its loaded_at."""
        times: list[float] = []
        watermarks: list[int] = []  # running maximum: served versions only grow
        for moment, version in self.samples:
            watermark = self.loaded_until_ms.get(version)
            if watermark is None:
                continue
            if watermarks and watermark <= watermarks[-1]:
                continue
            times.append(moment)
            watermarks.append(watermark)
        counted: dict[int, float] = {}
        for match_id, loaded in loaded_at_ms.items():
            index = bisect.bisect_left(watermarks, loaded)
            if index < len(times):
                counted[match_id] = times[index]
        return counted


def stage_latencies(
    result: ReplayResult, in_snapshot: dict[int, float] | None = None
) -> dict[str, list[float]]:
    """Per stage, the latency of every match that reached it (wall seconds after its end);
    `in_snapshot` is when each match was first counted by the served snapshot."""
    published: dict[int, float] = {}
    stored: dict[int, float] = {}
    times = [moment for moment, _ in result.commits]
    for record in sorted(result.records, key=lambda r: r.seen_at):
        published.setdefault(record.match_id, record.seen_at)
        # The first sample whose committed offset on the partition passed the record.
        start = bisect.bisect_left(times, record.seen_at)
        for moment, committed in result.commits[start:]:
            if committed.get(record.partition, -1) > record.offset:
                stored.setdefault(record.match_id, moment)
                break
    stages: dict[str, list[float]] = {"published": [], "stored": [], "in snapshot": []}
    counted = in_snapshot or {}
    for match_id, moment in published.items():
        ended = result.end_wall.get(match_id)
        if ended is None:
            continue
        stages["published"].append(moment - ended)
        if match_id in stored and match_id in result.expected:
            stages["stored"].append(stored[match_id] - ended)
        if match_id in counted and match_id in result.expected:
            stages["in snapshot"].append(counted[match_id] - ended)
    return stages


def main() -> None:
    """Run one replay with the model beside it and print one row per stage."""
    from services.cli.local_stores import tansu_broker
    from services.cli.processes import stop_all
    from tests.conftest import POSTGRES_DSN, claim_redis_database, free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--speedup", type=float, default=10.0)
    parser.add_argument("--play-seconds", type=float, default=3600.0)
    parser.add_argument("--every", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=1.0)
    parser.add_argument(
        "--recompute-seconds",
        type=float,
        default=DEFAULT_RECOMPUTE_SECONDS,
        help="MODEL_RECOMPUTE_INTERVAL_SECONDS (default: the production default)",
    )
    args = parser.parse_args()
    rows = load_public_matches(args.data_dir, every=args.every)
    first = min(int(row["start_time"]) for row in rows)
    # Matches ending in the first --play-seconds after the first start (they are the replay).
    rows = [row for row in rows if match_end(row) <= first + args.play_seconds]
    # One database for ingest, one for the model: nothing of another run's is read or flushed.
    redis_url, problem = claim_redis_database()
    model_redis_url, model_problem = claim_redis_database()
    if problem or model_problem:
        raise SystemExit(problem or model_problem)
    if model_redis_url == redis_url:  # TEST_REDIS_URL names one database for both
        raise SystemExit("the model needs a Redis database of its own: unset TEST_REDIS_URL")
    with tempfile.TemporaryDirectory() as workdir:
        model = ModelBeside(
            redis_url=model_redis_url,
            postgres_dsn=POSTGRES_DSN,
            recompute_seconds=args.recompute_seconds,
            workdir=Path(workdir),
        )
        port = free_port()
        broker = tansu_broker(port, Path(workdir) / "tansu.log")
        broker.start()
        try:
            time.sleep(0.5)
            result = asyncio.run(
                replay_through_pipeline(
                    rows,
                    kafka_bootstrap=f"127.0.0.1:{port}",
                    redis_url=redis_url,
                    workdir=Path(workdir),
                    speedup=args.speedup,
                    idle_seconds=args.idle_seconds,
                    timeout_seconds=args.play_seconds / args.speedup
                    + 2 * args.recompute_seconds
                    + 300,
                    companion=model,
                )
            )
        except Exception:
            served = model.samples[-1] if model.samples else None
            print(
                f"model: last sample {served}, watermarks {model.loaded_until_ms}\n"
                f"--- model:\n{tail(model.log)}",
                file=sys.stderr,
            )
            raise
        finally:
            stop_all([broker], grace_seconds=5)
    counted = model.counted_at(result.loaded_at_ms)
    print(
        f"{len(rows)} matches, {args.play_seconds:g} s of play at {args.speedup:g}x "
        f"({args.play_seconds / args.speedup:g} s wall), ingest idle {args.idle_seconds:g} s, "
        f"model recompute every {args.recompute_seconds:g} s; stored {len(result.stored)} of "
        f"{len(result.expected)} expected, {len(model.loaded_until_ms)} snapshots published"
    )
    print(f"{'stage':<12} {'matches':>8} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for stage, values in stage_latencies(result, counted).items():
        if not values:
            print(f"{stage:<12} {0:>8} {'-':>8} {'-':>8} {'-':>8}")
            continue
        data = np.array(values)
        p50, p95 = np.percentile(data, [50, 95])
        print(f"{stage:<12} {len(values):>8} {p50:>8.2f} {p95:>8.2f} {data.max():>8.2f}")
    print(f"target: in snapshot p95 <= {TARGET_P95_SECONDS:g} s")


if __name__ == "__main__":
    main()
