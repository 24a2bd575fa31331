"""The first start: `counterpick up` seeds an empty warehouse from the seed that ships with the
product (`seed/`), through the etl service that owns it, then asks the model to recompute, so
suggestions work a minute after the first `scripts/up.sh`, without internet.

It runs beside the mesh, never in its way: the services are up and serving while it loads, a
failure is a console line (the mesh keeps running), and a warehouse that holds any match is
left alone (ImportDumps with only_if_empty).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import grpc

from counterpick.etl.v1 import etl_service_pb2 as etl_pb
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from services.cli.etl_import import import_through_etl
from services.cli.token import operator_metadata
from services.common.channels import open_channel

log = logging.getLogger(__name__)

SEED_DIR = Path(__file__).resolve().parents[2] / "seed" / "opendota-public-matches-2026-07"
SEED_FILE = SEED_DIR / "matches.csv.gz"
SEED_NAME = "the bundled 2026-07 public matches"
ATTEMPTS = 3
# How long to wait, after the recompute is asked for, for the model to serve a snapshot.
READY_TIMEOUT_SECONDS = 300.0


def _say(line: str) -> None:
    print(f"counterpick up: {line}", file=sys.stderr, flush=True)


class _ProgressLine:
    """One console line that is rewritten in place on a terminal, or printed every ~10 % else."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last_tenth = -1

    def __call__(self, message: etl_pb.ImportProgress) -> None:
        total = f"/{message.total:,}" if message.total else ""
        line = (
            f"seeding the warehouse from {SEED_NAME}: {message.read:,}{total} records read, "
            f"{message.loaded:,} matches loaded"
        )
        if self._tty:
            print(f"\r{line}", end="", file=sys.stderr, flush=True)
            return
        tenth = message.read * 10 // message.total if message.total else message.read // 10_000
        if tenth != self._last_tenth:
            self._last_tenth = tenth
            _say(line)

    def end(self) -> None:
        if self._tty:
            print(file=sys.stderr, flush=True)


async def seed_first_start(
    state_dir: Path, etl_address: str, model_address: str, *, seed_file: Path = SEED_FILE
) -> bool:
    """Seed an empty warehouse and recompute; True when the model serves a snapshot after it
    (or the warehouse was not empty). Never raises: the mesh runs on either way."""
    started = time.monotonic()
    if not await asyncio.to_thread(seed_file.is_file):
        _say(f"no seed at {seed_file}; the warehouse stays empty until `counterpick import`")
        return False
    summary: etl_pb.ImportSummary | None = None
    only_if_empty = True
    for attempt in range(1, ATTEMPTS + 1):
        progress = _ProgressLine()
        started_loading = False

        def report(message: etl_pb.ImportProgress, progress: _ProgressLine = progress) -> None:
            nonlocal started_loading
            started_loading = True
            progress(message)

        try:
            summary = await import_through_etl(
                etl_address,
                [seed_file],
                operator_metadata(state_dir),
                only_if_empty=only_if_empty,
                on_progress=report,
            )
            progress.end()
            break
        except grpc.aio.AioRpcError as error:
            progress.end()
            _say(f"seeding failed (attempt {attempt}): {error.code().name}: {error.details()}")
            # A seed cut short left matches behind: the next attempt must not take them for a
            # warehouse someone filled (re-importing stores nothing twice).
            only_if_empty = only_if_empty and not started_loading
            await asyncio.sleep(2.0 * attempt)
    if summary is None:
        _say(f"the warehouse was not seeded; `counterpick import {seed_file}` does it by hand")
        return False
    if summary.skipped_not_empty:
        return True
    _say(
        f"seeded the warehouse with {summary.total.loaded:,} matches from {SEED_NAME} "
        f"in {time.monotonic() - started:.1f}s ({summary.stored_matches:,} stored); recomputing"
    )
    return await _recompute_and_wait(state_dir, model_address, started, summary.stored_matches)


async def _recompute_and_wait(
    state_dir: Path, model_address: str, started: float, stored: int
) -> bool:
    """Ask for a recompute until a run has counted every stored match, then report."""
    metadata = operator_metadata(state_dir)
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    async with open_channel(model_address) as channel:
        stub = model_grpc.ModelServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                # Starts an incremental run (full when the model has none yet), or returns the
                # one running, which may have begun before the seed was complete: then ask again.
                await stub.Recompute(model_pb.RecomputeRequest(), metadata=metadata, timeout=10)
            except grpc.aio.AioRpcError as error:
                log.debug("recompute not accepted yet: %s", error)
                await asyncio.sleep(2.0)
                continue
            while time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                try:
                    info = await stub.GetModelInfo(model_pb.GetModelInfoRequest(), timeout=5)
                except grpc.aio.AioRpcError:
                    continue  # MODEL_NOT_READY until the first snapshot
                if any(
                    run.status == "succeeded" and run.matches_used >= stored
                    for run in info.recent_runs
                ):
                    _say(
                        f"the model serves suggestions from {stored:,} matches, "
                        f"{time.monotonic() - started:.1f}s after seeding began"
                    )
                    return True
                if not any(run.status == "running" for run in info.recent_runs):
                    break
    _say("the model did not publish a snapshot of the seed in time; see its log")
    return False
