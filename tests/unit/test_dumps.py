"""Dump files: format detection by content, streaming every real data set, and damaged files.

Real files are read in place from the shared data directory (the `data_dir` fixture skips when
it is absent). Damaged and renamed variants are written to pytest's tmp_path, never the repo.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from services.common.dota_constants import load_constants
from services.etl import transform
from services.etl.dumps import (
    DumpFormat,
    DumpFormatError,
    DumpRecord,
    RecordKind,
    detect_format,
    read_dump,
    transform_record,
)
from services.etl.matches import InsignificantMatch, MatchSource, UnusableMatch

CONSTANTS = load_constants()
SAMPLES = "api-samples"


def _outcomes(records: list[DumpRecord]) -> Counter[str]:
    """How many records load, are skipped per reason, or are rejected per reason."""
    outcomes: Counter[str] = Counter()
    for record in records:
        try:
            match = transform_record(record, CONSTANTS)
        except UnusableMatch as unusable:
            outcomes[f"rejected:{unusable.reason.value}"] += 1
            continue
        except InsignificantMatch as insignificant:
            outcomes[f"skipped:{insignificant.reason.value}"] += 1
            continue
        reason = transform.skip_reason(match, CONSTANTS)
        outcomes[f"skipped:{reason.value}" if reason else "significant"] += 1
    return outcomes


# --- The four draft data sets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folder", "dump_format", "rows", "patches", "outcomes"),
    [
        (
            "opendota-public-matches-2026-07",
            DumpFormat.PUBLIC_MATCHES_CSV,
            65_134,
            {"7.41"},
            {
                "significant": 39_410,
                "skipped:unsupported_game_mode": 24_953,  # Turbo and other unbalanced modes
                "skipped:unsupported_lobby_type": 771,
            },
        ),
        (
            "opendota-public-matches-2024-08",
            DumpFormat.PUBLIC_MATCHES_CSV,
            26_162,
            {"7.37"},  # undated: from the set's match-id range
            {"significant": 26_162},
        ),
        (
            "uci-dota2-games-2016",
            DumpFormat.UCI_CSV,
            71_866,
            {"6.88"},
            {"significant": 71_866},  # no mode, lobby, duration or leaver data to check
        ),
        (
            "trackdota-pro-matches-2018-2019",
            DumpFormat.TRACKDOTA_CSV,
            5_100,
            {None},  # undated, spans 7.15-7.22: no single patch to assume
            {"significant": 5_098, "skipped:too_short": 2},
        ),
    ],
)
def test_every_draft_data_set_reads_and_transforms(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    folder: str,
    dump_format: DumpFormat,
    rows: int,
    patches: set[str | None],
    outcomes: dict[str, int],
) -> None:
    path = data_dir / folder / "matches.csv.gz"
    assert detect_format(path) is dump_format
    records = list(read_dump(path))
    assert len(records) == rows
    assert [r.index for r in records[:3]] == [1, 2, 3]
    assert [r.line for r in records[:3]] == [2, 3, 4]  # line 1 is the header
    matches = [transform_record(record, CONSTANTS) for record in records]
    assert {m.patch for m in matches} == patches
    assert {m.source for m in matches} == {MatchSource.IMPORT}
    assert len({m.match_id for m in matches}) == rows
    counted = _outcomes(records)
    with capsys.disabled():
        print(f"\n{folder}: {dict(sorted(counted.items()))}")
    assert counted == outcomes


def test_format_is_recognised_by_content_not_name(data_dir: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "players.json"  # a misleading name on a trackdota CSV
    shutil.copyfile(data_dir / "trackdota-pro-matches-2018-2019" / "matches.csv.gz", renamed)
    assert detect_format(renamed) is DumpFormat.TRACKDOTA_CSV
    plain = tmp_path / "uci"
    with gzip.open(data_dir / "uci-dota2-games-2016" / "matches.csv.gz", "rt") as source:
        plain.write_text("".join(next(source) for _ in range(4)))
    assert detect_format(plain) is DumpFormat.UCI_CSV
    assert [r.raw["row_id"] for r in read_dump(plain)] == ["2", "3", "4"]


def test_read_dump_streams(data_dir: Path) -> None:
    """The first records come out without reading the whole file into memory."""
    path = data_dir / "opendota-public-matches-2026-07" / "matches.csv.gz"
    tracemalloc.start()
    try:
        records = read_dump(path)
        first = [next(records) for _ in range(10)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first[0].raw["match_id"] == "8919844500"
    assert peak < 2_000_000  # the decompressed file is ~4 MB, its rows as dicts far more


def test_an_explicit_default_patch_applies_to_undated_rows_only(data_dir: Path) -> None:
    undated = data_dir / "opendota-public-matches-2024-08" / "matches.csv.gz"
    dated = data_dir / "opendota-public-matches-2026-07" / "matches.csv.gz"
    record = next(read_dump(undated, default_patch="7.36"))
    assert transform_record(record, CONSTANTS).patch == "7.36"
    record = next(read_dump(dated, default_patch="7.36"))
    assert transform_record(record, CONSTANTS).patch == "7.41"


def test_import_throughput_printed(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """read_dump + transform_record + skip_reason over the 2026-07 set (printed, not asserted)."""
    path = data_dir / "opendota-public-matches-2026-07" / "matches.csv.gz"
    started = time.perf_counter()
    count = 0
    for record in read_dump(path):
        transform.skip_reason(transform_record(record, CONSTANTS), CONSTANTS)
        count += 1
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nread_dump+transform+skip_reason: {count / elapsed:,.0f} matches/s")
    assert count == 65_134


# --- The recorded API responses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "kind", "count", "outcomes"),
    [
        (
            "dota2api-steam/get_match_history_by_sequence_num_result.json",
            RecordKind.STEAM_MATCH,
            100,
            {
                "significant": 50,
                "skipped:too_short": 29,
                # Match 632, a bot on the human's hero, is incomplete before it is invalid.
                "skipped:incomplete": 21,
            },
        ),
        (
            "dota2api-steam/get_match_details_result.json",
            RecordKind.STEAM_MATCH,
            1,
            {"skipped:abandoned": 1},
        ),
        (
            "dota2api-steam/get_match_details_ranked_result.json",
            RecordKind.STEAM_MATCH,
            1,
            {"significant": 1},
        ),
        ("dota2api-steam/single_match_result.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/details_api.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/details_api_pro.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/sequence_api.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/1781962623_api.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/3254426673_api.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/7490235544_api.json", RecordKind.STEAM_MATCH, 1, {"significant": 1}),
        ("odota-core/1781962623_output.json", RecordKind.OPENDOTA_MATCH, 1, {"significant": 1}),
        ("odota-core/3254426673_output.json", RecordKind.OPENDOTA_MATCH, 1, {"significant": 1}),
        ("odota-web/matches_2472899185.json", RecordKind.OPENDOTA_MATCH, 1, {"significant": 1}),
        ("odota-web/matches_4080856812.json", RecordKind.OPENDOTA_MATCH, 1, {"significant": 1}),
        (
            "odota-web/publicMatches_mmr_descending-1.json",
            RecordKind.PUBLIC_MATCH,
            100,
            {"significant": 100},
        ),
    ],
)
def test_every_match_sample_reads(
    data_dir: Path, relative: str, kind: RecordKind, count: int, outcomes: dict[str, int]
) -> None:
    path = data_dir / SAMPLES / relative
    assert detect_format(path) is DumpFormat.JSON
    records = list(read_dump(path))
    assert [r.kind for r in records] == [kind] * count
    assert [r.index for r in records] == list(range(1, count + 1))
    assert all(r.line is None for r in records)
    assert _outcomes(records) == outcomes


@pytest.mark.parametrize(
    ("relative", "words"),
    [
        ("dota2api-steam/get_match_history_result.json", "GetMatchHistory page"),
        ("odota-core/history_api.json", "GetMatchHistory page"),
        ("odota-web/proMatches.json", "record 1 is not a match"),
        ("odota-web/heroStats.json", "record 1 is not a match"),
        ("odota-core/1781962623_gcdata.json", "record 1 is not a match"),
        ("odota-core/7490235544_parsed.json", "record 1 is not a match"),
        ("odota-core/heroes_api.json", "record 1 is not a match"),
        ("odota-core/retriever_match.json", "record 1 is not a match"),
    ],
)
def test_other_api_responses_are_not_dumps(data_dir: Path, relative: str, words: str) -> None:
    path = data_dir / SAMPLES / relative
    with pytest.raises(DumpFormatError) as raised:
        list(read_dump(path))
    assert str(path) in str(raised.value)
    assert words in str(raised.value)


def test_gzip_json_reads_like_plain_json(data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / SAMPLES / "odota-web/publicMatches_mmr_descending-1.json"
    packed = tmp_path / "public.json.gz"
    packed.write_bytes(gzip.compress(source.read_bytes()))
    assert [r.raw for r in read_dump(packed)] == [r.raw for r in read_dump(source)]


# --- JSON Lines --------------------------------------------------------------------------------


def _write_lines(path: Path, values: list[Any]) -> None:
    path.write_text("\n".join(json.dumps(v) if v is not None else "" for v in values) + "\n")


def test_json_lines_of_every_shape(data_dir: Path, tmp_path: Path) -> None:
    details = json.loads((data_dir / SAMPLES / "odota-core/details_api.json").read_text())
    opendota = json.loads((data_dir / SAMPLES / "odota-web/matches_2472899185.json").read_text())
    public = json.loads(
        (data_dir / SAMPLES / "odota-web/publicMatches_mmr_descending-1.json").read_text()
    )
    lines = tmp_path / "mixed.jsonl"
    # A Steam envelope, a bare Steam match, a blank line, an OpenDota match, an array of rows.
    _write_lines(lines, [details, details["result"], None, opendota, public[:3]])
    assert detect_format(lines) is DumpFormat.JSON_LINES
    records = list(read_dump(lines))
    assert [(r.index, r.line, r.kind) for r in records] == [
        (1, 1, RecordKind.STEAM_MATCH),
        (2, 2, RecordKind.STEAM_MATCH),
        (3, 4, RecordKind.OPENDOTA_MATCH),
        (4, 5, RecordKind.PUBLIC_MATCH),
        (5, 5, RecordKind.PUBLIC_MATCH),
        (6, 5, RecordKind.PUBLIC_MATCH),
    ]
    assert records[2].location == "line 4"
    matches = [transform_record(r, CONSTANTS) for r in records]
    assert [m.match_id for m in matches[:3]] == [1781962623, 1781962623, 2472899185]
    assert {m.source for m in matches} == {MatchSource.IMPORT}


def test_a_single_line_json_document_is_json(tmp_path: Path) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps([{"match_id": 1, "radiant_team": [1], "dire_team": [2]}]) + "\n\n")
    assert detect_format(one) is DumpFormat.JSON
    assert len(list(read_dump(one))) == 1


# --- Damaged and foreign files -----------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(DumpFormatError) as raised:
        list(read_dump(path))
    message = str(raised.value)
    assert str(path) in message
    return message


def test_truncated_gzip_names_the_line(data_dir: Path, tmp_path: Path) -> None:
    whole = (data_dir / "opendota-public-matches-2026-07" / "matches.csv.gz").read_bytes()
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    read: list[DumpRecord] = []
    with pytest.raises(DumpFormatError) as raised:
        read.extend(read_dump(cut))
    message = str(raised.value)
    assert "damaged after line" in message
    last = read[-1].line
    assert last is not None
    assert f"line {last}:" in message or f"line {last + 1}:" in message
    assert 20_000 < len(read) < 45_000  # everything before the cut was read


def test_corrupt_gzip(data_dir: Path, tmp_path: Path) -> None:
    whole = bytearray((data_dir / "uci-dota2-games-2016" / "matches.csv.gz").read_bytes())
    whole[5000:5100] = bytes(100)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(bytes(whole))
    assert "damaged after line" in _error(broken)


def test_bad_json_lines_name_the_line(tmp_path: Path) -> None:
    row = {"match_id": 1, "radiant_win": 1, "radiant_team": "1 2 3 4 5", "dire_team": "6 7 8 9 10"}
    lines = tmp_path / "rows.jsonl"
    lines.write_text(f"{json.dumps(row)}\n{json.dumps(row)}\n{{'match_id': 3}}\n")
    assert "line 3: invalid JSON" in _error(lines)


def test_bad_json_document_names_the_line(tmp_path: Path) -> None:
    document = tmp_path / "doc.json"
    document.write_text('{\n  "result": {\n    "matches": [\n      {"match_id": 1,,}\n')
    assert "line 4: invalid JSON" in _error(document)
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"result": {"matches": [')
    assert "invalid JSON" in _error(truncated)


def test_a_row_with_the_wrong_number_of_fields(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "match_id,radiant_win,radiant_team,dire_team\n1,1,1 2 3 4 5,6 7 8 9 10\n\n2,1,1 2 3 4 5\n"
    )
    assert "line 4: 3 fields where the header has 4" in _error(rows)


def test_foreign_files(tmp_path: Path) -> None:
    players = tmp_path / "players.csv"
    players.write_text("match_id,account_id,hero_id,side,won\n1,2,3,1,1\n")
    message = _error(players)
    assert "match no known data set" in message
    assert "public_matches_csv needs dire_team, match_id, radiant_team, radiant_win" in message
    empty = tmp_path / "empty.json"
    empty.write_text("\n  \n")
    assert "empty" in _error(empty)
    archive = tmp_path / "dump.zip"
    archive.write_bytes(b"PK\x03\x04" + bytes(20))
    assert "zip-compressed" in _error(archive)
    steam_error = tmp_path / "error.json"
    steam_error.write_text('{"result": {"error": "Match ID not found"}}')
    assert "a Steam error response: 'Match ID not found'" in _error(steam_error)
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "cannot read" in _error(binary)
    with pytest.raises(DumpFormatError, match="cannot open"):
        detect_format(tmp_path / "missing.csv")


def test_a_mismatched_record_inside_a_json_array(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed.json"
    row = {"match_id": 1, "radiant_win": 1, "radiant_team": [1], "dire_team": [2]}
    mixed.write_text(json.dumps([row, {"hero_id": 5}]))
    assert "record 2 is not a match" in _error(mixed)


def test_an_empty_steam_page_has_no_records(tmp_path: Path) -> None:
    page = tmp_path / "page.json"
    page.write_text('{"result": {"status": 1, "matches": []}}')
    assert list(read_dump(page)) == []


PUBLIC_ROW: dict[str, Any] = {
    "match_id": 1,
    "radiant_win": 1,
    "start_time": 1_785_348_579,
    "duration": 2000,
    "lobby_type": 7,
    "game_mode": 22,
    "radiant_team": "1 2 3 4 5",
    "dire_team": "6 7 8 9 10",
}


@pytest.mark.parametrize(
    ("folder", "rows", "kind", "patch"),
    [
        ("opendota-public-matches-2026-07", 65_134, RecordKind.PUBLIC_MATCH, "7.41"),
        ("opendota-public-matches-2024-08", 26_162, RecordKind.PUBLIC_MATCH, "7.37"),
        ("uci-dota2-games-2016", 71_866, RecordKind.UCI, "6.88"),
        ("trackdota-pro-matches-2018-2019", 5_100, RecordKind.TRACKDOTA, None),
    ],
)
def test_every_draft_data_set_has_its_kind_size_and_patch(
    data_dir: Path, folder: str, rows: int, kind: RecordKind, patch: str | None
) -> None:
    records = list(read_dump(data_dir / folder / "matches.csv.gz"))
    assert len(records) == rows
    assert {record.kind for record in records} == {kind}
    matches = [transform_record(record, CONSTANTS) for record in records]
    patches = {m.patch for m in matches}
    if patch is not None:
        assert patch in patches
    assert len({m.match_id for m in matches}) == rows


def test_trackdota_draft_order(data_dir: Path) -> None:
    record = next(read_dump(data_dir / "trackdota-pro-matches-2018-2019" / "matches.csv.gz"))
    match = transform_record(record, CONSTANTS)
    assert len(match.picks_bans) == 22
    assert match.picks_bans[0].is_pick is False
    assert match.picks_bans[6].is_pick is True


def test_unrecognised_files_fail_with_the_file_named(tmp_path: Path) -> None:
    csv_file = tmp_path / "other.csv"
    csv_file.write_text("a,b\n1,2\n")
    with pytest.raises(DumpFormatError, match=r"other\.csv"):
        list(read_dump(csv_file))
    broken = tmp_path / "broken.json"
    broken.write_text('{"result": {"matches": [')
    with pytest.raises(DumpFormatError, match="invalid JSON"):
        list(read_dump(broken))
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(DumpFormatError, match="empty"):
        list(read_dump(empty))


def test_json_lines_of_public_rows(tmp_path: Path) -> None:
    lines = tmp_path / "rows.jsonl"
    lines.write_text("\n".join(json.dumps({**PUBLIC_ROW, "match_id": i}) for i in range(1, 4)))
    assert [r.raw["match_id"] for r in read_dump(lines)] == [1, 2, 3]
