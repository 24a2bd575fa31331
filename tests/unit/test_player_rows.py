"""The player-level dump formats: reading, grouping by match, and the transforms' quirks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from services.common.dota import Side
from services.common.dota_constants import load_constants
from services.etl import player_rows
from services.etl.dumps import DumpFormat, DumpFormatError, RecordKind, detect_format, read_dump
from services.etl.dumps import transform_record as transform
from services.etl.matches import RejectReason, SkipReason, UnusableMatch

CONSTANTS = load_constants()
TRACKDOTA_HEADER = "match_id,account_id,hero_id,is_radiant,win\n"
PRO_HEADER = "match_id,start_time,account_id,hero_id,win,league_name\n"
RADIANT = [1, 2, 3, 4, 5]
DIRE = [6, 7, 8, 9, 10]


def _trackdota_rows(match_id: int, radiant_win: bool) -> str:
    lines = []
    for index, hero in enumerate(RADIANT + DIRE):
        radiant = hero in RADIANT
        won = radiant == radiant_win
        lines.append(f"{match_id},{100 + index},{hero},{int(radiant)},{int(won)}\n")
    return "".join(lines)


def test_trackdota_players_group_by_match_and_keep_sides(tmp_path: Path) -> None:
    path = tmp_path / "players.csv"
    path.write_text(TRACKDOTA_HEADER + _trackdota_rows(11, True) + _trackdota_rows(12, False))
    assert detect_format(path) is DumpFormat.TRACKDOTA_PLAYERS_CSV
    records = list(read_dump(path))
    assert [r.kind for r in records] == [RecordKind.TRACKDOTA_PLAYERS] * 2
    assert [r.line for r in records] == [2, 12]
    first, second = (transform(r, CONSTANTS) for r in records)
    assert first.radiant_win
    assert not second.radiant_win
    assert first.patch is None
    assert first.start_time is None
    assert [p.account_id for p in first.players] == list(range(100, 110))
    assert first.heroes(Side.RADIANT) == tuple(RADIANT)
    assert [p.player_slot for p in first.players] == [0, 1, 2, 3, 4, 128, 129, 130, 131, 132]


def test_trackdota_players_merge_the_match_row_beside(tmp_path: Path) -> None:
    matches = tmp_path / "matches.csv.gz"
    header = (
        "match_id,league_id,league_name,league_tier,radiant_team_id,radiant_team_name,"
        "dire_team_id,dire_team_name,radiant_win,duration,radiant_score,dire_score,"
        "radiant_team,dire_team,picks_bans\n"
    )
    row = "11,1,L,1,1,A,2,B,1,2000,30,10,1 2 3 4 5,6 7 8 9 10,0:0:P:1;1:1:P:6\n"
    with gzip.open(matches, "wt") as handle:
        handle.write(header + row)
    players = tmp_path / "players.csv.gz"
    with gzip.open(players, "wt") as handle:
        handle.write(TRACKDOTA_HEADER + _trackdota_rows(11, True))
    (record,) = read_dump(players)
    match = transform(record, CONSTANTS)
    assert match.duration_seconds == 2000
    assert len(match.picks_bans) == 2
    assert match.players[0].account_id == 100
    # A player file that contradicts its match row is rejected, not merged.
    with gzip.open(players, "wt") as handle:
        handle.write(TRACKDOTA_HEADER + _trackdota_rows(11, False))
    (record,) = read_dump(players)
    with pytest.raises(UnusableMatch) as raised:
        transform(record, CONSTANTS)
    assert raised.value.reason is RejectReason.INVALID_VALUE


def test_pro_players_have_no_side_and_get_a_neutral_label(tmp_path: Path) -> None:
    path = tmp_path / "pro.csv"
    lines = [PRO_HEADER]
    for match_id in (20, 21):
        for index, hero in enumerate(RADIANT + DIRE):
            won = int(index < 5)
            lines.append(f"{match_id},1610000000,{200 + index},{hero},{won},League\n")
    path.write_text("".join(lines))
    assert detect_format(path) is DumpFormat.PRO_PLAYERS_CSV
    even, odd = (transform(r, CONSTANTS) for r in read_dump(path))
    # Winners are Radiant for an even id, Dire for an odd one: no invented Radiant advantage.
    assert even.radiant_win
    assert not odd.radiant_win
    assert even.heroes(Side.RADIANT) == tuple(RADIANT)
    assert odd.heroes(Side.DIRE) == tuple(RADIANT)
    assert even.patch == "7.28"
    assert even.start_time == 1610000000
    assert not even.picks_bans


def test_a_short_match_is_rejected_with_its_reason(tmp_path: Path) -> None:
    path = tmp_path / "pro.csv"
    path.write_text(PRO_HEADER + "30,1610000000,1,1,1,L\n30,1610000000,2,2,0,L\n")
    (record,) = read_dump(path)
    with pytest.raises(UnusableMatch, match="2 player rows"):
        transform(record, CONSTANTS)


def test_a_players_history_needs_its_account_in_the_file_name(tmp_path: Path) -> None:
    rows = [
        {"match_id": 5, "player_slot": 130, "radiant_win": True, "hero_id": 1,
         "start_time": 1500000000, "duration": 2000, "game_mode": 22, "lobby_type": 7,
         "leaver_status": 0, "kills": 3},
        {"match_id": 6, "player_slot": 1, "radiant_win": True, "hero_id": 2,
         "start_time": 1500000100, "duration": 200, "game_mode": 22, "lobby_type": 7},
        {"match_id": 7, "player_slot": 10, "radiant_win": True, "hero_id": 2,
         "start_time": 1500000200, "duration": 2000, "game_mode": 22, "lobby_type": 7},
    ]  # fmt: skip
    named = tmp_path / "players_4242_matches.json"
    named.write_text(json.dumps(rows))
    records = list(read_dump(named))
    assert [r.kind for r in records] == [RecordKind.PLAYER_MATCH] * 3
    lost = transform(records[0], CONSTANTS)
    (player,) = lost.players
    assert lost.radiant_win
    assert player.side is Side.DIRE
    assert player.account_id == 4242
    assert player.kills == 3
    assert lost.patch == "7.06"
    assert player_rows.skip_reason(lost, CONSTANTS) is None  # one player is not "incomplete"
    assert player_rows.skip_reason(transform(records[1], CONSTANTS), CONSTANTS) is (
        SkipReason.TOO_SHORT
    )
    with pytest.raises(UnusableMatch, match="player_slot=10"):
        transform(records[2], CONSTANTS)
    anonymous = tmp_path / "history.json"
    anonymous.write_text(json.dumps(rows))
    with pytest.raises(DumpFormatError, match="names no account"):
        list(read_dump(anonymous))
