"""Bulk import: dump files straight into the warehouse through the same transform as etl.

Runs in the process that holds the warehouse (no Kafka): the etl service (its ImportDumps RPC,
so imports work while the mesh runs), or `counterpick import` itself when no mesh holds it.
Importing the same file twice loads nothing twice: ids already stored count as duplicates.
Player-level files (dumps.PLAYER_LEVEL_KINDS) differ in one way: a ten-player match from them is
stored again when its stored copy has no account ids (the trackdota matches file, imported
first, has none), so that its players gain their accounts; a one-player match (a player's
history) never replaces a stored match, which would lose the other nine.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from services.common.dota import PLAYERS_PER_MATCH
from services.common.dota_constants import DotaConstants
from services.etl import player_rows, transform
from services.etl.dumps import PLAYER_LEVEL_KINDS, DumpRecord, read_dump, transform_record
from services.etl.matches import CleanMatch, InsignificantMatch, UnusableMatch
from services.etl.repo import Warehouse

BATCH_SIZE = 10_000


@dataclass
class ImportSummary:
    """What one import did, per file and in total."""

    read: int = 0
    loaded: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: Counter[str] = field(default_factory=Counter)
    first_rejections: list[str] = field(default_factory=list)

    def add(self, other: ImportSummary) -> None:
        """Fold another summary into this one."""
        self.read += other.read
        self.loaded += other.loaded
        self.duplicates += other.duplicates
        self.skipped.update(other.skipped)
        self.rejected.update(other.rejected)
        self.first_rejections.extend(other.first_rejections[: 5 - len(self.first_rejections)])


def import_file(
    path: Path,
    warehouse: Warehouse,
    constants: DotaConstants,
    *,
    on_progress: Callable[[int], None] = lambda _: None,
) -> ImportSummary:
    """Load one dump file; raises DumpFormatError (from dumps) when the file is unreadable."""
    summary = ImportSummary()
    reported = 0
    for _ in import_batches(path, warehouse, constants, summary):
        on_progress(summary.read - reported)
        reported = summary.read
    on_progress(summary.read - reported)
    return summary


def import_batches(
    path: Path, warehouse: Warehouse, constants: DotaConstants, summary: ImportSummary
) -> Iterator[None]:
    """Load one dump file into `summary`, yielding after every batch stored (for progress: the
    summary holds the counts so far). Raises DumpFormatError when the file is unreadable."""
    batch: dict[int, CleanMatch] = {}
    enrich = False
    for record in read_dump(path):
        summary.read += 1
        enrich = record.kind in PLAYER_LEVEL_KINDS
        match = _transform(record, constants, summary)
        if match is not None:
            if match.match_id in batch:
                summary.duplicates += 1
            batch[match.match_id] = match
        if len(batch) >= BATCH_SIZE:
            _load(batch, warehouse, summary, enrich=enrich)
            batch = {}
            yield
    _load(batch, warehouse, summary, enrich=enrich)
    yield


def count_records(path: Path) -> int:
    """Records in a dump file (one pass of the reader, no transform), for a progress total."""
    return sum(1 for _ in read_dump(path))


def _transform(
    record: DumpRecord, constants: DotaConstants, summary: ImportSummary
) -> CleanMatch | None:
    try:
        match = transform_record(record, constants)
    except UnusableMatch as unusable:
        summary.rejected[unusable.reason.value] += 1
        if len(summary.first_rejections) < 5:
            summary.first_rejections.append(f"record {record.index}: {unusable}")
        return None
    except InsignificantMatch as insignificant:
        summary.skipped[insignificant.reason.value] += 1
        return None
    if record.kind in PLAYER_LEVEL_KINDS:
        reason = player_rows.skip_reason(match, constants)
    else:
        reason = transform.skip_reason(match, constants)
    if reason is not None:
        summary.skipped[reason.value] += 1
        return None
    return match


def _load(
    batch: dict[int, CleanMatch], warehouse: Warehouse, summary: ImportSummary, *, enrich: bool
) -> None:
    if not batch:
        return
    existing = warehouse.existing_match_ids(batch)
    if enrich and existing:
        # Full matches replace stored copies without accounts (same slots, so the players'
        # rows are replaced too); a partial one never replaces a stored match.
        full = [i for i in existing if len(batch[i].players) == PLAYERS_PER_MATCH]
        existing -= set(full) - warehouse.match_ids_with_accounts(full)
    fresh = [match for match_id, match in batch.items() if match_id not in existing]
    summary.duplicates += len(existing)
    warehouse.insert_matches(fresh)
    summary.loaded += len(fresh)
