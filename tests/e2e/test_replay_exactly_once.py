"""Real public matches, listed the way OpenDota lists them, reach the warehouse exactly once.

The replayer serves a subset of the 2026-07 set on a fast virtual clock (a match is listed when
it ends, so long games appear below ids listed long before), with repeated rows, 429s, 5xx,
timeouts and a clock jump injected. The real `python -m services.ingest` polls it and publishes
to tansu; the real `python -m services.etl` loads into embedded chdb. Every significant listed
match (etl's own rule, applied to the same rows) must be stored once, and nothing else.

The whole set (65,134 rows) is replayed by hand, not in CI:
`.venv/bin/python -m tests.e2e.test_replay_exactly_once --every 1 --speedup 150`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import pytest

from counterpick.ingest.v1 import ingest_service_pb2 as pb
from tests.feed_replayer import FaultPlan, load_public_matches
from tests.replay_pipeline import ReplayResult, replay_through_pipeline

pytestmark = pytest.mark.e2e
# Every 20th row: ~3,260 matches spread over the whole two hours, long games included.
EVERY = 20
# The replay spans ~13,500 s of play: ~35 s of wall time.
SPEEDUP = 400.0
FAULTS = FaultPlan(
    seed=2026,
    repeat_rate=0.15,
    rate_limit_rate=0.03,
    retry_after_seconds=1.0,
    server_error_rate=0.05,
    timeout_rate=0.02,
    hold_seconds=2.0,  # the ingest client waits 1 s
)


def check_exactly_once(result: ReplayResult) -> None:
    """Stored == expected, each once; published each once."""
    missing = result.expected - result.stored
    extra = result.stored - result.expected
    assert not missing, f"{len(missing)} significant matches not stored, e.g. {sorted(missing)[:5]}"
    assert not extra, f"{len(extra)} stored matches not expected, e.g. {sorted(extra)[:5]}"
    assert result.stored_checksum == (len(result.expected), sum(result.expected))
    published = result.published
    assert set(published) == set(result.listed)
    repeated = {match_id: n for match_id, n in published.items() if n > 1}
    assert not repeated, f"published more than once: {list(repeated.items())[:5]}"


async def test_a_replay_of_real_matches_is_stored_exactly_once(
    data_dir: Path, kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    rows = load_public_matches(data_dir, every=EVERY)
    result = await replay_through_pipeline(
        rows,
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        workdir=tmp_path,
        speedup=SPEEDUP,
        faults=FAULTS,
        # Half an hour of play at once, 10 s in: a burst of pages for one poll.
        jumps=[(10.0, 1800.0)],
        timeout_seconds=150,
    )
    check_exactly_once(result)
    assert len(result.expected) > 1000
    # Every kind of fault happened, and late finishers were among what was stored.
    for kind in ("repeat", "429", "5xx", "timeout"):
        assert result.replayer_answers[kind] > 0, result.replayer_answers
    status = result.ingest_status
    assert status is not None
    assert status.state in (pb.SOURCE_STATE_HEALTHY, pb.SOURCE_STATE_DEGRADED)
    assert status.rate_limited_responses > 0
    assert status.errors_total == 0, status.errors_by_kind
    assert status.floor_match_id > min(result.listed), "the late window never moved"


def main() -> None:
    """Replay a larger part (by default all) of the set and print stored vs expected."""
    from services.cli.local_stores import tansu_broker
    from services.cli.processes import stop_all
    from tests.conftest import claim_redis_database, free_port

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path(__file__).parents[3] / "shared/data")
    parser.add_argument("--every", type=int, default=1)
    parser.add_argument("--speedup", type=float, default=150.0)
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    redis_url, problem = claim_redis_database()
    if problem:
        raise SystemExit(problem)
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        broker = tansu_broker(port, Path(workdir) / "tansu.log")
        broker.start()
        try:
            time.sleep(0.5)
            rows = load_public_matches(args.data_dir, every=args.every)
            result = asyncio.run(
                replay_through_pipeline(
                    rows,
                    kafka_bootstrap=f"127.0.0.1:{port}",
                    redis_url=redis_url,
                    workdir=Path(workdir),
                    speedup=args.speedup,
                    faults=None if args.no_faults else FAULTS,
                    pages_per_poll=1000,
                    timeout_seconds=args.timeout,
                )
            )
        finally:
            stop_all([broker], grace_seconds=5)
    published = result.published
    print(f"rows replayed        {len(rows):>8}")
    print(f"listed               {len(result.listed):>8}")
    print(f"published (distinct) {len(published):>8}  (records {sum(published.values())})")
    print(f"expected significant {len(result.expected):>8}")
    print(f"stored               {len(result.stored):>8}  checksum {result.stored_checksum}")
    print(f"missing              {len(result.expected - result.stored):>8}")
    print(f"extra                {len(result.stored - result.expected):>8}")
    print(f"faults served        {dict(result.replayer_answers)}")
    print(f"wall seconds         {result.seconds:>8.1f}")
    check_exactly_once(result)
    print("exactly once: OK")


if __name__ == "__main__":
    main()
