"""The first start as a newcomer has it: `counterpick up` on a fresh state dir, with an empty
warehouse and no internet, seeds the warehouse from the bundled seed and serves suggestions
within a bounded time; `counterpick import` works while it runs, and the model counts what it
imported."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from counterpick.common.v1 import common_pb2
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from services.cli.token import operator_metadata
from services.cli.up import SERVICES
from services.common.channels import open_channel
from tests.conftest import REDIS_URL, REPO_ROOT, free_port
from tests.contract.test_etl_import import write_rows

pytestmark = pytest.mark.e2e
# The issue asks for suggestions "about a minute" after the start; allow CI's slower machines.
SUGGESTIONS_WITHIN_SECONDS = 180.0


@dataclass
class FirstStart:
    process: subprocess.Popen[str]
    state_dir: Path
    model_address: str
    started: float
    output: list[str] = field(default_factory=list)
    suggestions_after: float | None = None

    def text(self) -> str:
        return "".join(self.output)


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)


@pytest.fixture(scope="module")
def first_start(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstStart]:
    state_dir = tmp_path_factory.mktemp("first-start")
    ports = {name: free_port() for name in SERVICES}
    argv = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        "--edge-port",
        str(free_port()),
        "--kafka-port",
        str(free_port()),
        "--state-dir",
        str(state_dir),
    ]
    for name, port in ports.items():
        argv += [f"--{name}-port", str(port)]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"KAFKA_BOOTSTRAP_SERVERS", "WAREHOUSE_DSN", "DEPLOYMENT"}
    }
    # No internet: ingest polls a port where nothing listens; the seed is all there is.
    env["OPENDOTA_BASE_URL"] = f"http://127.0.0.1:{free_port()}/api"
    env["REDIS_URL"] = REDIS_URL
    started = time.monotonic()
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    run = FirstStart(process, state_dir, f"127.0.0.1:{ports['model']}", started)
    threading.Thread(target=_drain, args=(process, run.output), daemon=True).start()
    try:
        yield run
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _suggest(address: str) -> model_pb.SuggestPicksResponse:
    async with open_channel(address) as channel:
        response: model_pb.SuggestPicksResponse = await model_grpc.ModelServiceStub(
            channel
        ).SuggestPicks(
            model_pb.SuggestPicksRequest(
                draft=common_pb2.DraftState(), side=common_pb2.TEAM_SIDE_RADIANT, limit=5
            ),
            timeout=5,
        )
        return response


def test_first_start_seeds_and_serves_suggestions_in_bounded_time(
    first_start: FirstStart,
) -> None:
    deadline = first_start.started + SUGGESTIONS_WITHIN_SECONDS
    last_error = ""
    while time.monotonic() < deadline:
        assert first_start.process.poll() is None, f"up exited:\n{first_start.text()}"
        try:
            response = asyncio.run(_suggest(first_start.model_address))
        except grpc.RpcError as error:
            # MODEL_NOT_READY until the seed is counted; UNAVAILABLE while model starts.
            last_error = f"{error.code().name}: {error.details()}"
            time.sleep(2.0)
            continue
        if response.suggestions:
            first_start.suggestions_after = time.monotonic() - first_start.started
            break
        time.sleep(2.0)
    else:
        pytest.fail(
            f"no suggestions within {SUGGESTIONS_WITHIN_SECONDS:g}s ({last_error}):\n"
            + first_start.text()
        )
    print(f"\nsuggestions {first_start.suggestions_after:.1f}s after `counterpick up` started")
    text = first_start.text()
    # The services came up before the seed was loaded: the table first, then the progress.
    assert text.index("Ctrl-C stops everything") < text.index("seeding the warehouse from")
    assert re.search(
        r"seeding the warehouse from the bundled 2026-07 public matches: [\d,]+/", text
    )
    assert "seeded the warehouse with" in text


def _stored(output: str) -> int:
    match = re.search(r"(\d+) matches stored", output)
    assert match, output
    return int(match.group(1))


async def _recompute_counts(state_dir: Path, address: str, stored: int) -> int:
    """Ask the model to recompute until a run has counted `stored` matches; its count."""
    async with open_channel(address) as channel:
        stub = model_grpc.ModelServiceStub(channel)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # Starting a job is quick, but the model may be busy with a run of its own (a
            # recompute's Python work holds the GIL in its thread) on a loaded machine.
            await stub.Recompute(
                model_pb.RecomputeRequest(), metadata=operator_metadata(state_dir), timeout=60
            )
            await asyncio.sleep(2.0)
            info = await stub.GetModelInfo(model_pb.GetModelInfoRequest(), timeout=5)
            counted = [r.matches_used for r in info.recent_runs if r.status == "succeeded"]
            if counted and max(counted) >= stored:
                return max(counted)
    raise AssertionError(f"no recompute counted {stored} matches")


def test_import_while_up_runs_goes_through_etl_and_the_model_counts_it(
    first_start: FirstStart, tmp_path: Path, data_dir: Path
) -> None:
    if first_start.suggestions_after is None:
        pytest.skip("the first start did not serve suggestions")
    dump = tmp_path / "new.csv"
    rows = write_rows(dump, data_dir, 30, id_offset=10**12)

    def counterpick_import() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "services.cli",
                "import",
                str(dump),
                "--state-dir",
                str(first_start.state_dir),
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    first = counterpick_import()
    assert first.returncode == 0, first.stderr + first.stdout
    assert "importing through" in first.stderr
    before = _stored(first.stdout) - rows
    assert re.search(rf"^total\s+{rows}\s+{rows}\s+0\s", first.stdout, re.MULTILINE), first.stdout
    second = counterpick_import()
    assert second.returncode == 0, second.stderr + second.stdout
    assert _stored(second.stdout) == before + rows  # nothing stored twice
    counted = asyncio.run(
        _recompute_counts(first_start.state_dir, first_start.model_address, before + rows)
    )
    assert counted == before + rows


def test_recompute_while_up_runs_on_its_own_ports_reads_through_its_etl(
    first_start: FirstStart,
) -> None:
    """`counterpick recompute --state-dir` finds the running mesh in mesh.json, whatever ports
    `up` gave it, and has its model do the run (it used to try etl on the default port only, and
    an operator may not read per-player rows through etl anyway)."""
    if first_start.suggestions_after is None:
        pytest.skip("the first start did not serve suggestions")
    env = {k: v for k, v in os.environ.items() if k not in {"ETL_ADDR", "DEPLOYMENT"}}
    env["REDIS_URL"] = REDIS_URL
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "recompute",
            "--state-dir",
            str(first_start.state_dir),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"the running mesh's model at {first_start.model_address}" in result.stdout
    assert re.search(r"published snapshot \d+ from [1-9]\d* matches", result.stdout), result.stdout
