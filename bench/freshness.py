"""bench.freshness: how long after a match ends it is published, and stored by etl.

The feed replayer serves real 2026-07 public matches on a virtual clock running --speedup times
faster than life (a match is listed when it ends, as OpenDota lists it); the real ingest and etl
processes run against tansu and embedded chdb (tests/replay_pipeline.py). Per match:

  published: the reader of the Kafka topic first saw its MatchRef;
  stored: etl's committed offset on its partition passed the record (etl commits after the
      warehouse insert), sampled every 0.2 s through GetEtlStatus.

Latencies are wall seconds from the moment the replay clock reached the match's end. They include
OpenDota's own quirk (the newest finished match is listed only once a newer one finishes) and the
ingest poll interval (--idle-seconds; the production default is 30 s). Not measured: counting in
the model's served snapshot (it needs the model process and its recompute on a short
MODEL_RECOMPUTE_INTERVAL_SECONDS; see the report).
Run: `uv run python -m bench.freshness [--speedup 20 --play-seconds 1800 --every 5]`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.feed_replayer import load_public_matches, match_end
from tests.replay_pipeline import ReplayResult, replay_through_pipeline


def stage_latencies(result: ReplayResult) -> dict[str, list[float]]:
    """Per stage, the latency of every match that reached it (wall seconds after its end)."""
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
    stages: dict[str, list[float]] = {"published": [], "stored": []}
    for match_id, moment in published.items():
        ended = result.end_wall.get(match_id)
        if ended is None:
            continue
        stages["published"].append(moment - ended)
        if match_id in stored and match_id in result.expected:
            stages["stored"].append(stored[match_id] - ended)
    return stages


def main() -> None:
    """Run one replay and print one row per stage."""
    from services.cli.local_stores import tansu_broker
    from services.cli.processes import stop_all
    from tests.conftest import claim_redis_database, free_port

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[2] / "shared/data")
    parser.add_argument("--speedup", type=float, default=20.0)
    parser.add_argument("--play-seconds", type=float, default=1800.0)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--idle-seconds", type=float, default=1.0)
    args = parser.parse_args()
    rows = load_public_matches(args.data_dir, every=args.every)
    first = min(int(row["start_time"]) for row in rows)
    # Matches ending in the first --play-seconds after the first start (they are the replay).
    rows = [row for row in rows if match_end(row) <= first + args.play_seconds]
    redis_url, problem = claim_redis_database()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as workdir:
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
                    timeout_seconds=args.play_seconds / args.speedup + 300,
                )
            )
        finally:
            stop_all([broker], grace_seconds=5)
    print(
        f"{len(rows)} matches, {args.play_seconds:g} s of play at {args.speedup:g}x, "
        f"ingest idle {args.idle_seconds:g} s; stored {len(result.stored)} of "
        f"{len(result.expected)} expected"
    )
    print(f"{'stage':<12} {'matches':>8} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for stage, values in stage_latencies(result).items():
        if not values:
            print(f"{stage:<12} {0:>8} {'-':>8} {'-':>8} {'-':>8}")
            continue
        data = np.array(values)
        p50, p95 = np.percentile(data, [50, 95])
        print(f"{stage:<12} {len(values):>8} {p50:>8.2f} {p95:>8.2f} {data.max():>8.2f}")


if __name__ == "__main__":
    main()
