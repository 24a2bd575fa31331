"""bench.suggest: SuggestPicks latency in-process and over gRPC on loopback, and throughput.

A snapshot is built from generated drafts (500k matches of the real hero ids, counted the way
the warehouse counts them), so the bench needs no data directory. Drafts asked about are random
legal states from 0 to 9 picks with bans. Run: `uv run python -m bench.suggest`.
Targets: compute p99 <= 0.2 ms; gRPC p99 <= 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import time

import grpc
import numpy as np
import numpy.typing as npt

from counterpick.common.v1 import common_pb2
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.common.config import ServiceSettings
from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.common.server import GrpcServer, registration
from services.model.drafts import Draft, DraftContext, suggest
from services.model.recompute import additive_model
from services.model.runtime import ModelRuntime
from services.model.server import SERVICE_NAME, ModelServicer
from services.model.snapshot import ModelSnapshot, PatchModel
from services.model.statistics import Counts, compute_statistics

PATCH = "7.41"


def generated_counts(matches: int, seed: int = 11) -> Counts:
    """Counts of random drafts with outcomes from random hero strengths."""
    rng = np.random.default_rng(seed)
    heroes = np.asarray(sorted(load_constants().heroes), dtype=np.int64)
    slots = int(heroes.max()) + 1
    strength = np.zeros(slots)
    strength[heroes] = rng.normal(0, 0.15, heroes.size)
    picks = np.argsort(rng.random((matches, heroes.size)), axis=1)[:, :10]
    drafted: npt.NDArray[np.int64] = heroes[picks]
    radiant, dire = drafted[:, :5], drafted[:, 5:]
    win = rng.random(matches) < 1 / (
        1 + np.exp(-(strength[radiant].sum(axis=1) - strength[dire].sum(axis=1)))
    )
    counts = Counts.empty(slots)
    ones = np.ones(matches, dtype=np.int64)
    wins = win.astype(np.int64)
    for column in range(5):
        counts.add_heroes(radiant[:, column], ones, wins)
        counts.add_heroes(dire[:, column], ones, 1 - wins)
        for other in range(5):
            counts.add_versus(radiant[:, column], dire[:, other], ones, wins)
        for other in range(column + 1, 5):
            low = np.minimum(radiant[:, column], radiant[:, other])
            high = np.maximum(radiant[:, column], radiant[:, other])
            counts.add_with(low, high, ones, wins)
            low = np.minimum(dire[:, column], dire[:, other])
            high = np.maximum(dire[:, column], dire[:, other])
            counts.add_with(low, high, ones, 1 - wins)
    counts.matches = matches
    return counts


def build_snapshot(matches: int) -> ModelSnapshot:
    """A one-patch snapshot of generated statistics and their additive model."""
    constants = load_constants()
    statistics = compute_statistics(PATCH, SkillBracket.ALL, generated_counts(matches))
    playable = np.zeros(statistics.hero_slots, dtype=bool)
    playable[np.asarray(sorted(constants.heroes))] = True
    return ModelSnapshot(
        version=1,
        computed_at=time.time(),
        patches={
            PATCH: PatchModel(
                PATCH, {SkillBracket.ALL: statistics}, additive_model(PATCH, statistics)
            )
        },
        current_patch=PATCH,
        playable=playable,
        pas_prior_weight=30.0,
    )


def random_drafts(count: int, seed: int = 5) -> list[tuple[Draft, Side]]:
    """Legal partial drafts (0..9 picks, 0..6 bans) and the side to pick next."""
    rng = np.random.default_rng(seed)
    heroes = np.asarray(sorted(load_constants().heroes))
    drafts = []
    for _ in range(count):
        chosen = rng.choice(heroes, 16, replace=False).tolist()
        picks = int(rng.integers(0, 10))
        bans = int(rng.integers(0, 7))
        radiant = tuple(chosen[: (picks + 1) // 2])
        dire = tuple(chosen[(picks + 1) // 2 : picks])
        side = Side.RADIANT if len(radiant) <= len(dire) else Side.DIRE
        drafts.append((Draft(radiant, dire, tuple(chosen[10 : 10 + bans])), side))
    return drafts


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds of samples in seconds."""
    values = np.asarray(samples) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


def bench_in_process(context: DraftContext, drafts: list[tuple[Draft, Side]]) -> dict[str, float]:
    for draft, side in drafts[:200]:  # warm caches
        suggest(context, draft, side, limit=10)
    samples = []
    for draft, side in drafts:
        started = time.perf_counter()
        suggest(context, draft, side, limit=10)
        samples.append(time.perf_counter() - started)
    p50, p99 = percentiles(samples)
    return {"p50": p50, "p99": p99, "per_s": len(samples) / sum(samples)}


def to_request(draft: Draft, side: Side) -> pb.SuggestPicksRequest:
    actions = []
    order = 0
    for hero in draft.bans:
        actions.append(
            common_pb2.DraftAction(
                order=order,
                kind=common_pb2.DRAFT_ACTION_KIND_BAN,
                side=common_pb2.TEAM_SIDE_RADIANT,
                hero_id=hero,
            )
        )
        order += 1
    for team, proto_side in (
        (draft.radiant, common_pb2.TEAM_SIDE_RADIANT),
        (draft.dire, common_pb2.TEAM_SIDE_DIRE),
    ):
        for hero in team:
            actions.append(
                common_pb2.DraftAction(
                    order=order,
                    kind=common_pb2.DRAFT_ACTION_KIND_PICK,
                    side=proto_side,
                    hero_id=hero,
                )
            )
            order += 1
    return pb.SuggestPicksRequest(
        draft=common_pb2.DraftState(actions=actions),
        side=common_pb2.TEAM_SIDE_RADIANT if side is Side.RADIANT else common_pb2.TEAM_SIDE_DIRE,
        limit=10,
    )


async def bench_grpc(
    snapshot: ModelSnapshot, drafts: list[tuple[Draft, Side]], seconds: float
) -> tuple[dict[str, float], dict[str, float]]:
    runtime = ModelRuntime(constants=load_constants(), snapshot=snapshot)
    server = GrpcServer(
        name="model",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                ModelServicer(runtime, load_constants()),
                pb_grpc.add_ModelServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
    )
    port = await server.start()
    requests = [to_request(draft, side) for draft, side in drafts]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ModelServiceStub(channel)
            for request in requests[:200]:
                await stub.SuggestPicks(request)
            samples = []
            for request in requests:
                started = time.perf_counter()
                await stub.SuggestPicks(request)
                samples.append(time.perf_counter() - started)
            p50, p99 = percentiles(samples)
            sequential = {"p50": p50, "p99": p99, "per_s": len(samples) / sum(samples)}
            done = 0
            deadline = time.perf_counter() + seconds

            async def worker(offset: int) -> None:
                nonlocal done
                index = offset
                while time.perf_counter() < deadline:
                    await stub.SuggestPicks(requests[index % len(requests)])
                    done += 1
                    index += 7

            started = time.perf_counter()
            await asyncio.gather(*(worker(i) for i in range(32)))
            elapsed = time.perf_counter() - started
            concurrent = {"p50": float("nan"), "p99": float("nan"), "per_s": done / elapsed}
    finally:
        await server.stop(0)
    return sequential, concurrent


def main() -> None:
    """Build the snapshot, measure, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.suggest")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--matches", type=int, default=500_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    snapshot = build_snapshot(args.matches)
    context = snapshot.context(PATCH, SkillBracket.ALL)
    drafts = random_drafts(args.calls)
    in_process = bench_in_process(context, drafts)
    sequential, concurrent = asyncio.run(
        bench_grpc(snapshot, drafts[: args.calls // 4], args.seconds)
    )
    print(f"{'path':<44} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9}")
    rows = [
        ("in-process suggest() (compute)", in_process),
        ("gRPC loopback, one call at a time", sequential),
        ("gRPC loopback, 32 concurrent (throughput)", concurrent),
    ]
    for name, row in rows:
        print(f"{name:<44} {row['p50']:>8.3f} {row['p99']:>8.3f} {row['per_s']:>9.0f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"targets: compute p99 <= 0.2 ms, gRPC p99 <= 2 ms; limit 10; peak RSS {peak_mb:.0f} MB; "
        f"cpu count {os.cpu_count()}"
    )


if __name__ == "__main__":
    main()
