"""Reading match dump files for the bulk import: format detection and streaming records.

Formats, recognised by content (CSV header columns, JSON shape), never by file name:
- gzip or plain CSV of drafts: OpenDota public matches (2024-08, 2026-07 sets), trackdota pro
  matches, UCI 2016;
- JSON: a Steam `{"result": {...}}` response (GetMatchDetails or GetMatchHistoryBySequenceNum),
  a bare Steam or OpenDota match object, a publicMatches array, or JSON Lines of any of those.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from services.common.dota_constants import DotaConstants
from services.etl import transform
from services.etl.matches import CleanMatch, MatchSource


class DumpFormatError(Exception):
    """The file is not a match dump this importer understands, or it is damaged."""


class RecordKind(StrEnum):
    """Which transform a record needs."""

    PUBLIC_MATCH = "public_match"
    TRACKDOTA = "trackdota"
    UCI = "uci"
    STEAM_MATCH = "steam_match"
    OPENDOTA_MATCH = "opendota_match"


@dataclass(frozen=True, slots=True)
class DumpRecord:
    """One record of a dump: where it was (for messages), what it is, and the raw data."""

    index: int
    kind: RecordKind
    raw: Mapping[str, Any]
    default_patch: str | None = None


_PUBLIC_COLUMNS = {"match_id", "radiant_win", "radiant_team", "dire_team"}
_TRACKDOTA_COLUMNS = {"match_id", "league_id", "picks_bans", "radiant_team", "dire_team"}
_UCI_COLUMNS = {"row_id", "team1_win", "team1_heroes", "team2_heroes"}
# The August 2024 set has no start times; its README dates it to patch 7.37. Trackdota spans
# 7.15-7.22 without start times: its patch is left unknown rather than guessed.
_DEFAULT_PATCH_WITHOUT_START_TIME = {"num_rank_tier": "7.37"}


def _open_text(path: Path) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _first_char(handle: IO[str]) -> str:
    while True:
        char = handle.read(1)
        if not char or not char.isspace():
            return char


def read_dump(path: Path) -> Iterator[DumpRecord]:
    """Stream the records of `path`; raises DumpFormatError naming the file on bad input."""
    try:
        handle = _open_text(path)
        with handle:
            first = _first_char(handle)
            handle.seek(0)
            if first in ("{", "["):
                yield from _json_records(path, handle)
            elif first:
                yield from _csv_records(path, handle)
            else:
                raise DumpFormatError(f"{path}: the file is empty")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as error:
        raise DumpFormatError(f"{path}: cannot read: {error}") from None


def _csv_records(path: Path, handle: IO[str]) -> Iterator[DumpRecord]:
    reader = csv.DictReader(handle)
    columns = set(reader.fieldnames or ())
    if columns >= _TRACKDOTA_COLUMNS:
        kind = RecordKind.TRACKDOTA
    elif columns >= _UCI_COLUMNS:
        kind = RecordKind.UCI
    elif columns >= _PUBLIC_COLUMNS:
        kind = RecordKind.PUBLIC_MATCH
    else:
        raise DumpFormatError(
            f"{path}: CSV columns {sorted(columns)} match no known data set (expected public "
            f"matches {sorted(_PUBLIC_COLUMNS)}, trackdota {sorted(_TRACKDOTA_COLUMNS)} or UCI "
            f"{sorted(_UCI_COLUMNS)})"
        )
    default_patch = next(
        (patch for column, patch in _DEFAULT_PATCH_WITHOUT_START_TIME.items() if column in columns),
        None,
    )
    try:
        for index, row in enumerate(reader, start=2):
            if None in row:
                raise DumpFormatError(f"{path}:{index}: more fields than the header has")
            yield DumpRecord(index, kind, row, default_patch)
    except csv.Error as error:
        raise DumpFormatError(f"{path}: CSV error: {error}") from None


def _kind_of(obj: Mapping[str, Any]) -> RecordKind | None:
    if "players" in obj and "match_id" in obj:
        players = obj["players"]
        # OpenDota match objects carry per-player fields Steam never sends.
        if (
            isinstance(players, list)
            and players
            and isinstance(players[0], Mapping)
            and (
                "lane_role" in players[0]
                or "isRadiant" in players[0]
                or "personaname" in players[0]
            )
        ):
            return RecordKind.OPENDOTA_MATCH
        if "od_data" in obj or "objectives" in obj or "teamfights" in obj:
            return RecordKind.OPENDOTA_MATCH
        return RecordKind.STEAM_MATCH
    if {"match_id", "radiant_team", "dire_team"} <= obj.keys():
        return RecordKind.PUBLIC_MATCH
    return None


def _objects(path: Path, value: Any, index: int) -> Iterator[tuple[int, Mapping[str, Any]]]:
    if isinstance(value, Mapping) and isinstance(value.get("result"), Mapping):
        result = value["result"]
        if isinstance(result.get("matches"), list):
            for offset, match in enumerate(result["matches"]):
                yield index + offset, match
            return
        yield index, result
        return
    if isinstance(value, list):
        for offset, item in enumerate(value):
            yield index + offset, item
        return
    yield index, value


def _json_records(path: Path, handle: IO[str]) -> Iterator[DumpRecord]:
    text = handle.read()
    try:
        documents: list[tuple[int, Any]] = [(1, json.loads(text))]
    except json.JSONDecodeError as whole_error:
        documents = []
        for line_number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append((line_number, json.loads(line)))
            except json.JSONDecodeError:
                raise DumpFormatError(
                    f"{path}: invalid JSON at line {whole_error.lineno}: {whole_error.msg}"
                ) from None
    produced = 0
    for index, document in documents:
        for record_index, obj in _objects(path, document, index):
            if not isinstance(obj, Mapping):
                raise DumpFormatError(f"{path}: record {record_index} is not a JSON object")
            kind = _kind_of(obj)
            if kind is None:
                raise DumpFormatError(
                    f"{path}: record {record_index} is neither a Steam or OpenDota match nor a "
                    "publicMatches row (needs match_id with players, or radiant_team/dire_team)"
                )
            produced += 1
            yield DumpRecord(record_index, kind, obj)
    if produced == 0:
        raise DumpFormatError(f"{path}: no match records found")


def transform_record(record: DumpRecord, constants: DotaConstants) -> CleanMatch:
    """The clean match of one dump record (raises UnusableMatch when it is invalid)."""
    raw = record.raw
    if record.kind is RecordKind.PUBLIC_MATCH:
        return transform.from_public_match(
            raw, default_patch=record.default_patch, source=MatchSource.IMPORT, constants=constants
        )
    if record.kind is RecordKind.TRACKDOTA:
        return transform.from_trackdota_row(raw, constants=constants)
    if record.kind is RecordKind.UCI:
        return transform.from_uci_row(raw, constants=constants)
    if record.kind is RecordKind.OPENDOTA_MATCH:
        return transform.from_opendota_match(raw, constants)
    return transform.from_steam_match(raw, MatchSource.IMPORT, constants)
