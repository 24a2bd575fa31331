"""Reading match dump files for the bulk import: format detection and streaming records.

The I/O edge of `counterpick import`; the transforms themselves are in transform.py. Formats are
recognised by content (gzip magic, CSV header columns, JSON shape), never by file name:
- gzip or plain CSV of drafts: OpenDota public matches (the 2024-08 and 2026-07 sets and any
  CSV with their columns), trackdota pro matches, UCI 2016;
- gzip or plain CSV of player rows (ten rows a match, grouped by match id; see player_rows.py):
  trackdota pro players 2018-2019 (merged with the trackdota `matches.csv[.gz]` beside the file,
  when there is one) and OpenDota pro players 2020-2021 (no side);
- JSON: a Steam `{"result": ...}` response (GetMatchDetails or GetMatchHistoryBySequenceNum), a
  bare Steam or OpenDota match object, an array of matches or of publicMatches rows, or JSON
  Lines of any of those; or one player's OpenDota match history (GET
  /api/players/{account_id}/matches: an array of rows with player_slot and hero_id but no
  players). That response does not name the player, so its file must be named as the api-samples
  are, `players_<account_id>_matches...`; otherwise it is refused.

CSV and JSON Lines are streamed a row / line at a time. A JSON document has to be parsed whole
(the standard library has no streaming parser): API responses are small, and a large dump is
better written as JSON Lines. A file that is none of these, or is damaged (truncated gzip, bad
JSON, a row with the wrong number of fields), raises DumpFormatError naming the file and, where
it applies, the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import chain
from pathlib import Path
from typing import IO, Any, NamedTuple

from services.common.dota_constants import DotaConstants
from services.etl import player_rows, transform
from services.etl.matches import CleanMatch, MatchSource


class DumpFormatError(Exception):
    """The file is not a match dump this importer understands, or it is damaged."""


class DumpFormat(StrEnum):
    """What a whole file holds."""

    PUBLIC_MATCHES_CSV = "public_matches_csv"
    TRACKDOTA_CSV = "trackdota_csv"
    UCI_CSV = "uci_csv"
    TRACKDOTA_PLAYERS_CSV = "trackdota_players_csv"
    PRO_PLAYERS_CSV = "pro_players_csv"
    JSON = "json"  # one document: a Steam response, a match, or an array
    JSON_LINES = "json_lines"  # one such document per line


class RecordKind(StrEnum):
    """Which transform one record needs."""

    PUBLIC_MATCH = "public_match"
    TRACKDOTA = "trackdota"
    UCI = "uci"
    STEAM_MATCH = "steam_match"
    OPENDOTA_MATCH = "opendota_match"
    TRACKDOTA_PLAYERS = "trackdota_players"  # raw: {"rows": [...], "match": row or None}
    PRO_PLAYERS = "pro_players"  # raw: {"rows": [...]}
    PLAYER_MATCH = "player_match"  # one row of a player's history, with its account_id


# Records that list only some of a match's players, or add account ids to a match that may be
# stored without them (see importer.py).
PLAYER_LEVEL_KINDS = frozenset(
    {RecordKind.TRACKDOTA_PLAYERS, RecordKind.PRO_PLAYERS, RecordKind.PLAYER_MATCH}
)


# Not frozen, like the rows in matches.py: one is built per record, and a frozen dataclass's
# __init__ costs several times more. Treat records as immutable all the same.
@dataclass(slots=True)
class DumpRecord:
    """One record of a dump: where it was (for messages), what it is, and the raw data."""

    index: int  # 1-based position of the record in the file
    kind: RecordKind
    raw: Mapping[str, Any]
    default_patch: str | None = None  # the patch to assume when the record has no start time
    line: int | None = None  # its line (CSV, JSON Lines); None inside a multi-line JSON document

    @property
    def location(self) -> str:
        """`line 12` where the line is known, else `record 3`."""
        return f"line {self.line}" if self.line is not None else f"record {self.index}"


_CSV_FORMATS = (
    # Most specific first: trackdota rows also have every public-match column.
    (DumpFormat.TRACKDOTA_CSV, frozenset({"match_id", "league_id", "picks_bans", "radiant_team"})),
    (DumpFormat.UCI_CSV, frozenset({"row_id", "team1_win", "team1_heroes", "team2_heroes"})),
    (
        DumpFormat.TRACKDOTA_PLAYERS_CSV,
        frozenset({"match_id", "account_id", "hero_id", "is_radiant", "win"}),
    ),
    (
        DumpFormat.PRO_PLAYERS_CSV,
        frozenset({"match_id", "start_time", "account_id", "hero_id", "win"}),
    ),
    (
        DumpFormat.PUBLIC_MATCHES_CSV,
        frozenset({"match_id", "radiant_win", "radiant_team", "dire_team"}),
    ),
)
_KIND_OF_CSV = {
    DumpFormat.TRACKDOTA_CSV: RecordKind.TRACKDOTA,
    DumpFormat.UCI_CSV: RecordKind.UCI,
    DumpFormat.PUBLIC_MATCHES_CSV: RecordKind.PUBLIC_MATCH,
}
# Undated data whose patch is known from its provenance, by match-id range: the Aug 2024 OpenDota
# public matches (alohadanceprime/dota-predictor; the ids of the whole source, so both split
# parts) are patch 7.37. Keyed by id range rather than by file or column so that no other
# undated dump gets a guessed patch. Trackdota (undated, 7.15-7.22) spans several patches and is
# left unknown; UCI needs no entry, its transform dates every row 2016-08-13 (6.88).
_UNDATED_PATCHES = ((7_910_080_814, 7_916_538_316, "7.37"),)
_OTHER_COMPRESSION = (
    (b"PK\x03\x04", "zip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# Steam GetMatchHistory pages list match ids and heroes without results: not importable matches.
_HISTORY_KEYS = frozenset({"num_results", "total_results", "results_remaining"})
# What a damaged file raises while it is read: gzip truncation (EOFError), a bad CRC or header
# (BadGzipFile, an OSError), corrupt deflate data (zlib.error), bytes that are not UTF-8.
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)
_INCOMPLETE = object()  # the first line is not a whole JSON value: a multi-line document


class _Start(NamedTuple):
    """What sniffing read: the first non-blank line, the format it implies, any lookahead."""

    format: DumpFormat
    line: str
    line_number: int
    value: Any  # the first line parsed as JSON, _INCOMPLETE, or None for CSV
    lookahead: list[str]  # lines read after it to tell JSON Lines from one document
    header: list[str]


def detect_format(path: Path) -> DumpFormat:
    """What `path` holds, from its content; raises DumpFormatError naming the file otherwise."""
    with _open_text(path) as handle:
        return _sniff(path, handle).format


def read_dump(path: Path, *, default_patch: str | None = None) -> Iterator[DumpRecord]:
    """Stream the records of `path`; raises DumpFormatError naming the file on bad input.

    `default_patch` is the patch of records without a start time. Without it, the patch of the
    known undated data sets is filled in (see _UNDATED_PATCHES) and other records stay unknown.
    """
    with _open_text(path) as handle:
        start = _sniff(path, handle)
        if start.format in _PLAYER_CSV_KINDS:
            yield from _player_csv_records(path, handle, start)
        elif start.format is DumpFormat.JSON_LINES:
            yield from _json_lines(path, handle, start, default_patch)
        elif start.format is DumpFormat.JSON:
            yield from _json_document(path, handle, start, default_patch)
        else:
            yield from _csv_records(path, handle, start, default_patch)


def transform_record(record: DumpRecord, constants: DotaConstants) -> CleanMatch:
    """The clean match of one dump record (raises UnusableMatch when it is invalid)."""
    raw, patch, kind = record.raw, record.default_patch, record.kind
    source = MatchSource.IMPORT
    if kind is RecordKind.PUBLIC_MATCH:
        return transform.from_public_match(
            raw, default_patch=patch, source=source, constants=constants
        )
    if kind is RecordKind.TRACKDOTA:
        return transform.from_trackdota_row(
            raw, default_patch=patch, source=source, constants=constants
        )
    if kind is RecordKind.UCI:
        return transform.from_uci_row(raw, default_patch=patch, source=source, constants=constants)
    if kind is RecordKind.OPENDOTA_MATCH:
        return transform.from_opendota_match(raw, constants, source=source, default_patch=patch)
    if kind in PLAYER_LEVEL_KINDS:
        return _player_level_match(record, constants)
    return transform.from_steam_match(raw, source, constants, default_patch=patch)


def _player_level_match(record: DumpRecord, constants: DotaConstants) -> CleanMatch:
    raw, source = record.raw, MatchSource.IMPORT
    if record.kind is RecordKind.TRACKDOTA_PLAYERS:
        return player_rows.from_trackdota_players(
            raw["rows"], raw["match"], constants, source=source
        )
    if record.kind is RecordKind.PRO_PLAYERS:
        return player_rows.from_pro_players(raw["rows"], constants, source=source)
    return player_rows.from_player_match(raw, constants, source=source)


def _open_text(path: Path) -> IO[str]:
    try:
        with path.open("rb") as probe:
            magic = probe.read(6)
        if magic[:2] == b"\x1f\x8b":
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        for prefix, name in _OTHER_COMPRESSION:
            if magic.startswith(prefix):
                raise DumpFormatError(
                    f"{path}: {name}-compressed; only gzip or uncompressed files are read"
                )
        return path.open("r", encoding="utf-8-sig", newline="")
    except OSError as error:
        raise DumpFormatError(f"{path}: cannot open: {error}") from None


def _sniff(path: Path, handle: IO[str]) -> _Start:
    line_number = 0
    try:
        for line in handle:
            line_number += 1
            if line.strip():
                break
        else:
            raise DumpFormatError(f"{path}: the file is empty")
        if line.lstrip()[0] in "{[":
            return _sniff_json(handle, line, line_number)
    except _READ_ERRORS as error:
        raise DumpFormatError(f"{path}: line {line_number + 1}: cannot read: {error}") from None
    header = next(csv.reader([line]))
    columns = set(header)
    for dump_format, required in _CSV_FORMATS:
        if columns >= required:
            return _Start(dump_format, line, line_number, None, [], header)
    expected = "; ".join(
        f"{dump_format.value} needs {', '.join(sorted(required))}"
        for dump_format, required in _CSV_FORMATS
    )
    raise DumpFormatError(
        f"{path}: line {line_number}: CSV columns {', '.join(header)} match no known data set "
        f"({expected}); nor is it JSON"
    )


def _sniff_json(handle: IO[str], line: str, line_number: int) -> _Start:
    try:
        value: Any = json.loads(line)
    except json.JSONDecodeError:
        return _Start(DumpFormat.JSON, line, line_number, _INCOMPLETE, [], [])
    # A whole value on the first line: JSON Lines if another value follows, else one document.
    lookahead = []
    for following in handle:
        lookahead.append(following)
        if following.strip():
            return _Start(DumpFormat.JSON_LINES, line, line_number, value, lookahead, [])
    return _Start(DumpFormat.JSON, line, line_number, value, lookahead, [])


def _csv_records(
    path: Path, handle: IO[str], start: _Start, default_patch: str | None
) -> Iterator[DumpRecord]:
    kind = _KIND_OF_CSV[start.format]
    header = start.header
    width = len(header)
    # Undated public-match rows may belong to a data set whose patch is known.
    start_column = header.index("start_time") if "start_time" in header else None
    id_column = header.index("match_id") if kind is RecordKind.PUBLIC_MATCH else None
    reader = csv.reader(handle)
    offset = start.line_number  # reader.line_num counts the lines after the header
    index = 0
    try:
        for row in reader:
            if len(row) != width:
                if not row:
                    continue  # a blank line
                raise DumpFormatError(
                    f"{path}: line {offset + reader.line_num}: {len(row)} fields where the "
                    f"header has {width}"
                )
            index += 1
            patch = default_patch
            if (
                patch is None
                and id_column is not None
                and (start_column is None or not row[start_column])
            ):
                patch = _undated_patch(row[id_column])
            yield DumpRecord(
                index, kind, dict(zip(header, row, strict=True)), patch, offset + reader.line_num
            )
    except (csv.Error, *_READ_ERRORS) as error:
        raise _csv_failure(path, offset + reader.line_num, error) from None


def _csv_failure(path: Path, line: int, error: Exception) -> DumpFormatError:
    """The format error of a CSV dump that failed at `line`: bad CSV, or a damaged file."""
    if isinstance(error, csv.Error):
        return DumpFormatError(f"{path}: line {line}: {error}")
    return DumpFormatError(f"{path}: damaged after line {line}: {error}")


def _undated_patch(match_id: str) -> str | None:
    try:
        number = int(match_id)
    except ValueError:
        return None  # the transform reports the bad id
    for low, high, patch in _UNDATED_PATCHES:
        if low <= number <= high:
            return patch
    return None


def _json_lines(
    path: Path, handle: IO[str], start: _Start, default_patch: str | None
) -> Iterator[DumpRecord]:
    lines: Iterable[str] = chain(start.lookahead, handle)
    line_number, value = start.line_number, start.value
    index = 0
    try:
        while True:
            for kind, obj in _match_objects(path, value, f"line {line_number}: "):
                index += 1
                yield DumpRecord(
                    index, kind, _with_account(path, kind, obj), default_patch, line_number
                )
            for line in lines:
                line_number += 1
                if line.strip():
                    break
            else:
                return
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                raise DumpFormatError(
                    f"{path}: line {line_number}: invalid JSON: {error.msg} (column {error.colno})"
                ) from None
    except _READ_ERRORS as error:
        raise DumpFormatError(f"{path}: damaged after line {line_number}: {error}") from None


def _json_document(
    path: Path, handle: IO[str], start: _Start, default_patch: str | None
) -> Iterator[DumpRecord]:
    value = start.value
    if value is _INCOMPLETE:
        try:
            text = start.line + handle.read()
        except _READ_ERRORS as error:
            raise DumpFormatError(f"{path}: cannot read: {error}") from None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise DumpFormatError(
                f"{path}: line {start.line_number + error.lineno - 1}: invalid JSON: "
                f"{error.msg} (column {error.colno})"
            ) from None
    for index, (kind, obj) in enumerate(_match_objects(path, value, ""), start=1):
        yield DumpRecord(index, kind, _with_account(path, kind, obj), default_patch, None)


def _match_objects(
    path: Path, value: Any, where: str
) -> Iterator[tuple[RecordKind, Mapping[str, Any]]]:
    """The match records in one JSON value: a Steam envelope, an array, or a single object."""
    items: list[Any]
    if isinstance(value, dict) and isinstance(value.get("result"), dict):
        result = value["result"]
        if "error" in result or "statusDetail" in result:  # how Steam reports a failed call
            detail = result.get("error") or result.get("statusDetail")
            raise DumpFormatError(f"{path}: {where}a Steam error response: {detail!r}")
        if "matches" in result:
            if _HISTORY_KEYS & result.keys():
                raise DumpFormatError(
                    f"{path}: {where}a Steam GetMatchHistory page: it lists matches without "
                    "results; import GetMatchDetails or GetMatchHistoryBySequenceNum responses"
                )
            items = result["matches"] if isinstance(result["matches"], list) else [None]
        else:
            items = [result]
    elif isinstance(value, list):
        items = value
    else:
        items = [value]
    for position, item in enumerate(items, start=1):
        kind = _kind_of(item) if isinstance(item, dict) else None
        if kind is None:
            raise DumpFormatError(
                f"{path}: {where}record {position} is not a match: expected a Steam or OpenDota "
                "match (match_id, players, radiant_win), a publicMatches row (match_id, "
                'radiant_team, dire_team), or a Steam {"result": ...} response of them'
            )
        yield kind, item


def _kind_of(obj: Mapping[str, Any]) -> RecordKind | None:
    if "match_id" not in obj:
        return None
    players = obj.get("players")
    # OpenDota's internal stages (gcdata, identity, parsed replay) have match_id and players too,
    # but neither a result nor a game mode: they are not matches.
    if isinstance(players, list) and ("radiant_win" in obj or "game_mode" in obj):
        # OpenDota adds match fields Steam never sends, and per-player fields.
        if "patch" in obj or "region" in obj or "od_data" in obj:
            return RecordKind.OPENDOTA_MATCH
        first = players[0] if players else None
        if isinstance(first, dict) and ("isRadiant" in first or "lane_role" in first):
            return RecordKind.OPENDOTA_MATCH
        return RecordKind.STEAM_MATCH
    if "radiant_team" in obj and "dire_team" in obj:
        return RecordKind.PUBLIC_MATCH
    history = players is None and {"player_slot", "hero_id", "radiant_win"} <= obj.keys()
    return RecordKind.PLAYER_MATCH if history else None


def _with_account(path: Path, kind: RecordKind, obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """A history row with its player's account id (other records as they are)."""
    if kind is not RecordKind.PLAYER_MATCH:
        return obj
    return {**obj, "account_id": _history_account(path)}


def _history_account(path: Path) -> int:
    """The account a player's match history belongs to, from the file name (the response
    itself does not say)."""
    found = _HISTORY_NAME.match(path.name)
    if found is None:
        raise DumpFormatError(
            f"{path}: a player's match history (rows with player_slot, no players) names no "
            "account; name the file players_<account_id>_matches....json as OpenDota's "
            "/api/players/<account_id>/matches response"
        )
    return int(found.group(1))


_HISTORY_NAME = re.compile(r"players_(\d{1,10})_matches")
_PLAYER_CSV_KINDS = {
    DumpFormat.TRACKDOTA_PLAYERS_CSV: RecordKind.TRACKDOTA_PLAYERS,
    DumpFormat.PRO_PLAYERS_CSV: RecordKind.PRO_PLAYERS,
}


def _player_csv_records(path: Path, handle: IO[str], start: _Start) -> Iterator[DumpRecord]:
    """One record per match: its consecutive rows (the files are grouped by match id; a match
    whose rows are split is reported by the transform as having too few rows)."""
    kind = _PLAYER_CSV_KINDS[start.format]
    matches = _trackdota_matches_beside(path) if kind is RecordKind.TRACKDOTA_PLAYERS else {}
    rows: list[dict[str, str]] = []
    first_line = 0
    index = 0

    def record() -> DumpRecord:
        raw: dict[str, Any] = {"rows": rows, "match_id": rows[0].get("match_id")}
        if kind is RecordKind.TRACKDOTA_PLAYERS:
            raw["match"] = matches.get(rows[0].get("match_id", ""))
        return DumpRecord(index, kind, raw, None, first_line)

    header = start.header
    reader = csv.reader(handle)
    offset = start.line_number
    try:
        for values in reader:
            if len(values) != len(header):
                if not values:
                    continue
                raise DumpFormatError(
                    f"{path}: line {offset + reader.line_num}: {len(values)} fields where the "
                    f"header has {len(header)}"
                )
            row = dict(zip(header, values, strict=True))
            if rows and row["match_id"] != rows[0]["match_id"]:
                index += 1
                yield record()
                rows = []
            if not rows:
                first_line = offset + reader.line_num
            rows.append(row)
        if rows:
            index += 1
            yield record()
    except (csv.Error, *_READ_ERRORS) as error:
        raise _csv_failure(path, offset + reader.line_num, error) from None


def _trackdota_matches_beside(path: Path) -> dict[str, Mapping[str, Any]]:
    """The trackdota match rows of `matches.csv.gz` (or `.csv`) in the same folder, by match
    id; empty when there is none or it is not a trackdota matches file."""
    for name in ("matches.csv.gz", "matches.csv"):
        beside = path.with_name(name)
        if beside.is_file() and detect_format(beside) is DumpFormat.TRACKDOTA_CSV:
            return {str(r.raw["match_id"]): r.raw for r in read_dump(beside)}
    return {}
