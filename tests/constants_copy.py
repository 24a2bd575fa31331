"""A test's own copy of the dotaconstants files, and the update that adds a patch to it (the
model and the etl follow such updates without a restart)."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime
from pathlib import Path

from services.common.dota_constants import FILES, constants_dir


def copy_constants(target: Path) -> Path:
    """The constants files in `target`, a directory of the test's own."""
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(constants_dir() / name, target / name)
    return target


def add_patch(directory: Path, name: str, released: datetime) -> None:
    """A dotaconstants update that adds patch `name`, with a modification time that moved."""
    path = directory / "patch.json"
    patches = json.loads(path.read_text())
    patches.append({"name": name, "date": released.isoformat(), "id": patches[-1]["id"] + 1})
    before = path.stat().st_mtime
    path.write_text(json.dumps(patches))
    os.utime(path, (before + 5, before + 5))
