"""`counterpick import` of the real data sets: loads, summarises, and never loads twice."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.etl.repo import Warehouse
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.e2e


def _import(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "WAREHOUSE_DSN"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "import", "--state-dir", str(state_dir), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_import_twice_loads_once_and_reports_reasons(data_dir: Path, tmp_path: Path) -> None:
    files = [
        str(data_dir / "trackdota-pro-matches-2018-2019" / "matches.csv.gz"),
        str(data_dir / "api-samples/dota2api-steam/get_match_history_by_sequence_num_result.json"),
        str(data_dir / "api-samples/odota-web/matches_2472899185.json"),
    ]
    first = _import(*files, state_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    total = next(line for line in first.stdout.splitlines() if line.startswith("total"))
    read, loaded, duplicates = (int(x) for x in total.split()[1:4])
    assert (read, duplicates) == (5_201, 0)
    assert "too_short" in total
    # The one 2011 bot match with a hero twice is insignificant: skipped, not rejected.
    assert "invalid_value" not in total
    assert "incomplete" in total
    second = _import(*files, state_dir=tmp_path)
    assert second.returncode == 0, second.stderr
    total = next(line for line in second.stdout.splitlines() if line.startswith("total"))
    assert total.split()[1:4] == [str(read), "0", str(loaded)]
    warehouse = Warehouse.connect(f"chdb://{(tmp_path / 'warehouse').resolve()}")
    try:
        assert warehouse.match_count() == loaded
    finally:
        warehouse.close()


def test_a_bad_file_exits_non_zero_naming_it(tmp_path: Path) -> None:
    bad = tmp_path / "players.csv"
    bad.write_text("account_id,hero_id\n1,2\n")
    result = _import(str(bad), state_dir=tmp_path)
    assert result.returncode == 1
    assert "players.csv" in result.stderr
    assert "match no known data set" in result.stderr
    missing = _import(str(tmp_path / "nope.json"), state_dir=tmp_path)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr
