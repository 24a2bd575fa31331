"""A published model snapshot: statistics and win model per patch and bracket, and how a request's
patch and bracket resolve to what is actually served (with a note when they fall back).

Pure domain code; services/model/repo.py moves snapshots through Redis.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from services.common.dota import SkillBracket
from services.common.errors import CounterpickError
from services.model.drafts import DraftContext
from services.model.positions import HeroPositions
from services.model.statistics import BracketStatistics, bracket_model, shrinkage_note
from services.model.winmodel.served import DraftModel


class ModelNotReady(CounterpickError):
    """No snapshot (or no model for the patch) exists yet."""

    status_code_name = "FAILED_PRECONDITION"
    reason = "ERROR_REASON_MODEL_NOT_READY"


@dataclass(frozen=True)
class RunRecord:
    """One recompute run, as GetModelInfo and `counterpick recompute` show it."""

    run_id: str
    started_at: float
    finished_at: float | None
    status: str  # running | succeeded | failed
    mode: str  # full | incremental
    matches_used: int
    coverage: dict[str, dict[str, int]]  # patch -> bracket -> matches
    snapshot_version: int | None = None
    error: str = ""
    quality: dict[str, float] = field(default_factory=dict)
    # The watermark (unix seconds): the run counts the matches loaded up to it; None when the
    # warehouse held none (and on records written before it was kept).
    loaded_until: float | None = None


@dataclass(frozen=True)
class PatchModel:
    """Everything served for one patch."""

    patch: str
    statistics: dict[SkillBracket, BracketStatistics]
    model: DraftModel
    # Set when the patch had too few matches and was shrunk toward an older one.
    shrunk_toward: str | None = None
    # Where the patch's heroes play (None in snapshots written before positions were kept).
    positions: HeroPositions | None = None


def _patch_key(name: str) -> tuple[int, ...]:
    """Patches in release order: "7.41" < "7.41b" < "7.42" (numbers, then a letter's rank)."""
    match = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)", name)
    if match is None:
        return (-1,)
    major, minor, letter = match.groups()
    return (int(major), int(minor), ord(letter) if letter else 0)


def _nearest(name: str, available: Iterable[str]) -> str | None:
    """The patch with statistics that answers for `name`: the newest one before it, else the
    oldest one after it (None when there are none)."""
    key = _patch_key(name)
    names = sorted(available, key=_patch_key)
    earlier = [known for known in names if _patch_key(known) < key]
    if earlier:
        return earlier[-1]
    return names[0] if names else None


@dataclass(frozen=True)
class ModelSnapshot:
    """A complete, immutable snapshot; replicas swap the whole object on a change notice."""

    version: int
    computed_at: float
    patches: dict[str, PatchModel]
    current_patch: str
    playable: npt.NDArray[np.bool_]  # (H,) heroes that exist today
    pas_prior_weight: float
    runs: tuple[RunRecord, ...] = ()

    def matches(self, patch: str, bracket: SkillBracket = SkillBracket.ALL) -> int:
        """Matches behind one patch and bracket (0 when absent)."""
        entry = self.patches.get(patch)
        if entry is None or bracket not in entry.statistics:
            return 0
        return entry.statistics[bracket].matches

    def context(self, patch: str, bracket: SkillBracket, field_name: str = "patch") -> DraftContext:
        """The statistics and model a request for (patch, bracket) is answered from."""
        name = patch or self.current_patch
        entry = self.patches.get(name)
        notes: list[str] = []
        if entry is None:
            # A known patch without statistics is answered, never refused: from the newest
            # patch with statistics before it (a new patch's first days, or a fresh install
            # seeded with the previous patch), else, for a patch older than all the data, from
            # the oldest patch with statistics. The note names the patch used. Whether the
            # patch exists at all is the caller's check (against the game constants).
            used = _nearest(name, self.patches)
            if used is None:
                raise ModelNotReady(f"no statistics for any patch yet (asked for {name!r})")
            if _patch_key(used) < _patch_key(name):
                notes.append(f"no statistics for patch {name} yet; used {used}")
            else:
                notes.append(
                    f"no statistics for patch {name}; used {used}, the oldest patch with statistics"
                )
            name, entry = used, self.patches[used]
        if entry.shrunk_toward:
            notes.append(
                f"patch {name} has {entry.statistics[SkillBracket.ALL].matches} matches; "
                f"shrunk toward {entry.shrunk_toward}"
            )
        # A bracket's statistics are shrunk toward ALL (statistics.shrink_toward_all) as far as
        # its counts warrant, so they are served at any size; the model moves with its heroes.
        overall = entry.statistics[SkillBracket.ALL]
        statistics = entry.statistics.get(bracket)
        model = entry.model
        if statistics is None:
            notes.append(f"{bracket.value} bracket has 0 matches in {name}; used all brackets")
            statistics = overall
        elif bracket is not SkillBracket.ALL:
            notes.append(shrinkage_note(statistics))
            model = bracket_model(entry.model, overall, statistics)
        return DraftContext(
            statistics,
            model,
            self.playable,
            tuple(notes),
            patch=name,
            positions=entry.positions,
        )
