"""Every real source format becomes a CleanMatch; bad records are rejected with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.common.dota import Side
from services.common.dota_constants import load_constants
from services.etl import transform
from services.etl.dumps import DumpFormatError, RecordKind, read_dump, transform_record
from services.etl.matches import RejectReason, SkipReason, UnusableMatch

CONSTANTS = load_constants()
SAMPLES = "api-samples"


def _json(data_dir: Path, relative: str) -> Any:
    return json.loads((data_dir / SAMPLES / relative).read_text())


def test_steam_match_details(data_dir: Path) -> None:
    raw = _json(data_dir, "odota-core/details_api.json")["result"]
    match = transform.from_steam_match(raw)
    assert (match.match_id, match.match_seq_num, match.duration_seconds) == (
        1781962623,
        1584699503,
        2220,
    )
    assert match.radiant_win is True
    assert match.patch == "6.84"
    assert match.heroes(Side.RADIANT) == (100, 73, 104, 46, 75)
    assert len(match.heroes(Side.DIRE)) == 5
    assert transform.skip_reason(match) is None
    assert all(p.items for p in match.players)


def test_steam_sequence_page_anonymous_accounts_and_skips(data_dir: Path) -> None:
    matches = _json(data_dir, "dota2api-steam/get_match_history_by_sequence_num_result.json")[
        "result"
    ]["matches"]
    parsed = []
    rejected = []
    for raw in matches:
        try:
            parsed.append(transform.from_steam_match(raw))
        except UnusableMatch as error:
            rejected.append(error.reason)
    assert len(parsed) + len(rejected) == 100
    assert rejected == [RejectReason.INVALID_VALUE]  # one 2011 beta match lists a hero twice
    assert any(p.account_id is None for m in parsed for p in m.players)
    reasons = {transform.skip_reason(m) for m in parsed}
    assert SkipReason.TOO_SHORT in reasons


def test_opendota_match_with_lane_roles(data_dir: Path) -> None:
    match = transform.from_opendota_match(_json(data_dir, "odota-web/matches_2472899185.json"))
    assert match.patch == "6.88"
    assert match.region == 2
    assert any(p.lane_role is not None for p in match.players)


def test_opendota_pro_match_keeps_the_draft_in_order(data_dir: Path) -> None:
    match = transform.from_opendota_match(_json(data_dir, "odota-web/matches_4080856812.json"))
    orders = [step.order for step in match.picks_bans]
    assert orders == sorted(orders)
    assert sum(step.is_pick for step in match.picks_bans) == 10


def test_public_match_rows_in_old_string_format(data_dir: Path) -> None:
    rows = _json(data_dir, "odota-web/publicMatches_mmr_descending-1.json")
    matches = [transform.from_public_match(row) for row in rows]
    assert len(matches) == 100
    assert all(len(m.heroes(Side.RADIANT)) == 5 for m in matches)


BASE_ROW: dict[str, Any] = {
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
    ("change", "reason", "words"),
    [
        ({"radiant_team": "1 2 3 4 9999"}, RejectReason.UNKNOWN_HERO, "9999"),
        ({"duration": -5}, RejectReason.INVALID_VALUE, "duration=-5"),
        ({"radiant_win": None}, RejectReason.MISSING_FIELD, "radiant_win"),
        ({"radiant_team": "1 2 3 4"}, RejectReason.INVALID_VALUE, "4 and 5"),
        ({"dire_team": "1 7 8 9 10"}, RejectReason.INVALID_VALUE, "hero_id=1"),
        ({"match_id": "abc"}, RejectReason.INVALID_VALUE, "match_id"),
    ],
)
def test_bad_rows_are_rejected_with_reason_and_field(
    change: dict[str, Any], reason: RejectReason, words: str
) -> None:
    with pytest.raises(UnusableMatch) as raised:
        transform.from_public_match({**BASE_ROW, **change})
    assert raised.value.reason is reason
    assert words in raised.value.detail


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"game_mode": 23}, SkipReason.UNSUPPORTED_GAME_MODE),
        ({"lobby_type": 4}, SkipReason.UNSUPPORTED_LOBBY_TYPE),
        ({"duration": 360}, SkipReason.TOO_SHORT),
        ({}, None),
    ],
)
def test_significance_rule(change: dict[str, Any], reason: SkipReason | None) -> None:
    assert transform.skip_reason(transform.from_public_match({**BASE_ROW, **change})) is reason


def test_abandon_is_skipped(data_dir: Path) -> None:
    raw = _json(data_dir, "odota-core/details_api.json")["result"]
    raw["players"][3]["leaver_status"] = 3
    assert transform.skip_reason(transform.from_steam_match(raw)) is SkipReason.ABANDONED


@pytest.mark.parametrize(
    ("folder", "rows", "kind", "patch"),
    [
        ("opendota-public-matches-2026-07", 65_134, RecordKind.PUBLIC_MATCH, "7.41"),
        ("opendota-public-matches-2024-08", 26_162, RecordKind.PUBLIC_MATCH, "7.37"),
        ("uci-dota2-games-2016", 71_866, RecordKind.UCI, "6.88"),
        ("trackdota-pro-matches-2018-2019", 5_100, RecordKind.TRACKDOTA, None),
    ],
)
def test_every_draft_data_set_reads_and_transforms(
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
    lines.write_text("\n".join(json.dumps({**BASE_ROW, "match_id": i}) for i in range(1, 4)))
    assert [r.raw["match_id"] for r in read_dump(lines)] == [1, 2, 3]
