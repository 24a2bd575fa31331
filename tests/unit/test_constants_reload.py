"""Game constants follow a dotaconstants update without a restart, and "the current patch" is
the newest one started by the clock, whether or not any match of it is stored."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.common.dota_constants import ConstantsWatcher, constants_dir, read_constants
from services.model.recompute import current_patch
from tests.constants_copy import add_patch, copy_constants

DAY = 86_400.0


def test_current_patch_is_the_newest_started_by_the_clock() -> None:
    constants = read_constants(constants_dir())
    newest = constants.patches[-1]
    released = newest.released_at.timestamp()
    previous = constants.patches[-2].name
    assert constants.current_patch(released - DAY).name == previous
    assert constants.current_patch(released + DAY).name == newest.name
    # The snapshot's current patch: started per the constants, even with no statistics yet...
    assert current_patch(constants, [previous], released + DAY) == newest.name
    assert current_patch(constants, [previous], released - DAY) == previous
    # ...and never older than the newest patch with statistics (a clock behind the data).
    assert current_patch(constants, [previous, newest.name], released - DAY) == newest.name


def test_a_watcher_reloads_changed_files_at_its_next_check(tmp_path: Path) -> None:
    directory = copy_constants(tmp_path / "constants")
    now = [0.0]
    watcher = ConstantsWatcher(directory, check_seconds=30, monotonic=lambda: now[0])
    first = watcher.current()
    assert first.patch_named("9.01") is None
    now[0] = 31
    assert watcher.current() is first  # nothing changed: the same object, nothing re-read

    released = datetime.now(UTC) - timedelta(days=1)
    add_patch(directory, "9.01", released)
    now[0] = 40
    assert watcher.current() is first  # not checked again before check_seconds
    now[0] = 62
    reloaded = watcher.current()
    assert reloaded is not first
    patch = reloaded.patch_named("9.01")
    assert patch is not None
    assert reloaded.current_patch().name == "9.01"
    assert reloaded.patch_at(int(released.timestamp()) + 60) == patch


def test_a_half_written_update_keeps_the_previous_constants(tmp_path: Path) -> None:
    directory = copy_constants(tmp_path / "constants")
    watcher = ConstantsWatcher(directory, check_seconds=0)
    first = watcher.current()
    (directory / "patch.json").write_text('[{"name": "9.01", "da')
    assert watcher.current() is first
    shutil.copy(constants_dir() / "patch.json", directory / "patch.json")
    assert watcher.check().patches == first.patches


def test_a_new_hero_is_known_after_the_reload(tmp_path: Path) -> None:
    directory = copy_constants(tmp_path / "constants")
    watcher = ConstantsWatcher(directory, check_seconds=0)
    heroes = json.loads((directory / "heroes.json").read_text())
    new_id = max(int(key) for key in heroes) + 1
    heroes[str(new_id)] = {**heroes["1"], "id": new_id, "name": "npc_dota_hero_newcomer"}
    (directory / "heroes.json").write_text(json.dumps(heroes))
    os.utime(directory / "heroes.json", (1e9, 1e9))
    reloaded = watcher.current()
    assert new_id in reloaded.heroes
    assert reloaded.hero_slots == new_id + 1
