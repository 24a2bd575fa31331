"""The pure transforms on real recorded API responses and data-set rows, and the significance rule.

The data comes from the shared real-data directory (the `data_dir` fixture skips when it is
absent); nothing is copied into the repository. Bad inputs are real records with one field
changed, so every other field stays realistic.
"""

from __future__ import annotations

import copy
import csv
import gzip
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.etl import transform
from services.etl.matches import (
    CleanMatch,
    InsignificantMatch,
    MatchSource,
    RejectReason,
    SkipReason,
    UnusableMatch,
)

CONSTANTS = load_constants()


def _json(data_dir: Path, relative: str) -> Any:
    return json.loads((data_dir / "api-samples" / relative).read_text())


def _steam(data_dir: Path, relative: str) -> dict[str, Any]:
    result: dict[str, Any] = _json(data_dir, relative)["result"]
    return result


def _csv_rows(data_dir: Path, folder: str) -> list[dict[str, str]]:
    with gzip.open(data_dir / folder / "matches.csv.gz", "rt", newline="") as handle:
        return list(csv.DictReader(handle))


def _rejected(call: Callable[[], CleanMatch]) -> UnusableMatch:
    with pytest.raises(UnusableMatch) as raised:
        call()
    return raised.value


# --- Steam -------------------------------------------------------------------------------------


def test_steam_match_details_known_values(data_dir: Path) -> None:
    match = transform.from_steam_match(_steam(data_dir, "odota-core/details_api.json"))
    assert (match.match_id, match.match_seq_num, match.start_time) == (
        1781962623,
        1584699503,
        1441835947,
    )
    assert (match.radiant_win, match.duration_seconds) == (True, 2220)
    assert (match.game_mode, match.lobby_type, match.cluster) == (22, 7, 132)
    assert match.patch == "6.84"
    assert match.source is MatchSource.STEAM_SEQUENCE
    assert match.heroes(Side.RADIANT) == (100, 73, 104, 46, 75)
    assert match.heroes(Side.DIRE) == (6, 105, 52, 59, 1)
    assert [p.player_slot for p in match.players] == [0, 1, 2, 3, 4, 128, 129, 130, 131, 132]
    first = match.players[0]
    assert (first.account_id, first.kills, first.deaths, first.assists) == (120269134, 8, 6, 11)
    assert (first.gold_per_min, first.xp_per_min, first.leaver_status) == (443, 527, 0)
    assert first.items == (50, 152, 96, 46, 36, 30)
    assert all(p.position is None and p.lane_role is None for p in match.players)
    assert match.picks_bans == ()
    assert transform.skip_reason(match, CONSTANTS) is None


def test_the_same_match_from_steam_and_from_opendota_agrees(data_dir: Path) -> None:
    steam = transform.from_steam_match(_json(data_dir, "odota-core/1781962623_api.json"))
    opendota = transform.from_opendota_match(_json(data_dir, "odota-core/1781962623_output.json"))
    assert opendota.source is MatchSource.OPENDOTA_MATCH
    for side in Side:
        assert steam.heroes(side) == opendota.heroes(side)
    assert (steam.radiant_win, steam.duration_seconds, steam.patch) == (
        opendota.radiant_win,
        opendota.duration_seconds,
        opendota.patch,
    )
    # Steam hides the account of slot 1 (4294967295); OpenDota learned it from the game
    # coordinator's data. Every account Steam does show, OpenDota shows the same.
    steam_accounts = [p.account_id for p in steam.players]
    opendota_accounts = [p.account_id for p in opendota.players]
    assert steam_accounts[1] is None
    assert opendota_accounts[1] == 109378329
    assert all(s in (None, o) for s, o in zip(steam_accounts, opendota_accounts, strict=True))
    # OpenDota adds the region and the lane each player was seen in; lane_role is not a position,
    # but with farm it gives one (services/etl/lanes.py); Steam has neither.
    assert (steam.region, opendota.region) == (None, 3)
    assert [p.lane_role for p in opendota.players] == [3, 1, 4, 2, 1, 3, 2, 2, 1, 1]
    assert [p.position for p in opendota.players] == [4, 1, 3, 2, 5, 3, 4, 2, 5, 1]
    assert all(p.position is None for p in steam.players)
    # No match-level average rank in /api/matches; per-player rank_tier is today's rank.
    assert opendota.avg_rank_tier is None


def test_abandoned_match_is_skipped(data_dir: Path) -> None:
    # A real public All Pick match in which the player in slot 3 abandoned (leaver_status 2).
    match = transform.from_steam_match(
        _steam(data_dir, "dota2api-steam/get_match_details_result.json")
    )
    assert [p.leaver_status for p in match.players].count(2) == 1
    assert transform.skip_reason(match, CONSTANTS) is SkipReason.ABANDONED


def test_anonymous_account_becomes_none(data_dir: Path) -> None:
    raw = _steam(data_dir, "dota2api-steam/get_match_history_by_sequence_num_result.json")
    match_496 = next(m for m in raw["matches"] if m["match_id"] == 496)
    assert [p["account_id"] for p in match_496["players"]][:2] == [4294967295, 54008249]
    match = transform.from_steam_match(match_496)
    assert [p.account_id for p in match.players][:3] == [None, 54008249, None]


def _outcome(raw: dict[str, Any]) -> str:
    """`significant`, the skip reason, or `rejected: <detail>` for one Steam match."""
    try:
        match = transform.from_steam_match(raw)
    except UnusableMatch as unusable:
        return f"rejected: {unusable}"
    except InsignificantMatch as insignificant:
        return f"{insignificant.reason.value} despite: {insignificant.detail}"
    reason = transform.skip_reason(match, CONSTANTS)
    return reason.value if reason else "significant"


def test_steam_sequence_page_of_2011_reject_and_skip_counts(data_dir: Path) -> None:
    """100 beta-era matches: bot games, empty slots, short games and one hero picked twice."""
    raw = _steam(data_dir, "dota2api-steam/get_match_history_by_sequence_num_result.json")
    outcomes = Counter(_outcome(match) for match in raw["matches"])
    assert outcomes == {
        "significant": 50,
        "too_short": 29,
        "incomplete": 20,
        # Match 632: one human and bots, a bot on the human's hero. Insignificant either way, so
        # a skip, not a dead letter.
        "incomplete despite: players: hero_id=16 is picked twice": 1,
    }


def test_bot_slots_are_not_players(data_dir: Path) -> None:
    # Match 512: one human and nine bots (Steam omits account_id for a bot), 2.6 hours long.
    raw = _steam(data_dir, "dota2api-steam/get_match_history_by_sequence_num_result.json")
    match_512 = next(m for m in raw["matches"] if m["match_id"] == 512)
    assert match_512["human_players"] == 1
    match = transform.from_steam_match(match_512)
    assert len(match.players) == 1
    assert transform.skip_reason(match, CONSTANTS) is SkipReason.INCOMPLETE


def test_empty_slots_make_a_match_incomplete_not_invalid(data_dir: Path) -> None:
    raw = copy.deepcopy(_steam(data_dir, "odota-core/details_api.json"))
    raw["players"][7]["hero_id"] = 0
    match = transform.from_steam_match(raw)
    assert len(match.players) == 9
    assert transform.skip_reason(match, CONSTANTS) is SkipReason.INCOMPLETE


def test_steam_2025_captains_mode_draft_in_order(data_dir: Path) -> None:
    """Newer Steam data: team_number per player and a 24-step captain's-mode draft."""
    match = transform.from_steam_match(
        _steam(data_dir, "odota-core/sequence_api.json")["matches"][0]
    )
    assert (match.match_id, match.radiant_win, match.duration_seconds, match.patch) == (
        8591933650,
        True,
        1624,
        "7.39",
    )
    assert match.heroes(Side.RADIANT) == (108, 9, 14, 6, 123)
    assert match.heroes(Side.DIRE) == (53, 84, 51, 43, 102)
    steps = [(s.order, s.is_pick, s.side, s.hero_id) for s in match.picks_bans]
    assert steps[:3] == [
        (0, False, Side.DIRE, 21),
        (1, False, Side.RADIANT, 1),
        (2, False, Side.RADIANT, 4),
    ]
    assert steps[7] == (7, True, Side.DIRE, 43)
    assert [s.order for s in match.picks_bans] == list(range(24))
    for step in match.picks_bans:
        if step.is_pick:
            assert step.hero_id in match.heroes(step.side)
    assert sum(s.is_pick for s in match.picks_bans) == 10


@pytest.mark.parametrize(
    ("relative", "patch", "skip"),
    [
        ("dota2api-steam/get_match_details_ranked_result.json", "6.83", None),
        ("dota2api-steam/single_match_result.json", "6.82", None),
        ("odota-core/details_api_pro.json", "7.06", None),
        ("odota-core/3254426673_api.json", "7.06", None),
        ("odota-core/7490235544_api.json", "7.35", None),
    ],
)
def test_every_steam_match_sample(
    data_dir: Path, relative: str, patch: str, skip: SkipReason | None
) -> None:
    document = _json(data_dir, relative)
    match = transform.from_steam_match(document.get("result", document))
    assert match.patch == patch
    assert len(match.players) == 10
    assert transform.skip_reason(match, CONSTANTS) is skip


# --- OpenDota ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "match_id", "patch", "region", "draft_steps"),
    [
        ("odota-core/1781962623_output.json", 1781962623, "6.84", 3, 0),
        ("odota-core/3254426673_output.json", 3254426673, "7.06", 17, 20),
        ("odota-web/matches_2472899185.json", 2472899185, "6.88", 2, 0),
        ("odota-web/matches_4080856812.json", 4080856812, "7.19", 1, 22),
    ],
)
def test_every_opendota_match_sample(
    data_dir: Path, relative: str, match_id: int, patch: str, region: int, draft_steps: int
) -> None:
    match = transform.from_opendota_match(_json(data_dir, relative), CONSTANTS)
    assert (match.match_id, match.patch, match.region) == (match_id, patch, region)
    assert len(match.picks_bans) == draft_steps
    assert [s.order for s in match.picks_bans] == list(range(draft_steps))
    assert transform.skip_reason(match, CONSTANTS) is None


def test_opendota_anonymous_players_are_null_accounts(data_dir: Path) -> None:
    match = transform.from_opendota_match(_json(data_dir, "odota-web/matches_2472899185.json"))
    assert [p.account_id for p in match.players].count(None) == 4
    assert len(match.players) == 10


# --- OpenDota publicMatches and the CSV data sets ---------------------------------------------


def test_public_matches_2018_comma_strings(data_dir: Path) -> None:
    rows = _json(data_dir, "odota-web/publicMatches_mmr_descending-1.json")
    matches = [transform.from_public_match(row, constants=CONSTANTS) for row in rows]
    assert len(matches) == 100
    first = matches[0]
    assert (first.match_id, first.match_seq_num, first.avg_rank_tier, first.cluster) == (
        4105872202,
        3559380024,
        80,
        135,
    )
    assert first.heroes(Side.RADIANT) == (91, 72, 86, 33, 111)
    assert first.heroes(Side.DIRE) == (79, 121, 44, 70, 58)
    assert {m.patch for m in matches} == {"7.19"}
    assert all(transform.skip_reason(m, CONSTANTS) is None for m in matches)


def test_public_match_int_arrays_as_the_api_returns_today(data_dir: Path) -> None:
    row = _json(data_dir, "odota-web/publicMatches_mmr_descending-1.json")[0]
    as_arrays = {
        **row,
        "radiant_team": [int(h) for h in row["radiant_team"].split(",")],
        "dire_team": [int(h) for h in row["dire_team"].split(",")],
    }
    assert transform.from_public_match(as_arrays) == transform.from_public_match(row)


def test_public_match_csv_row_2026(data_dir: Path) -> None:
    row = _csv_rows(data_dir, "opendota-public-matches-2026-07")[0]
    match = transform.from_public_match(row, source=MatchSource.IMPORT, constants=CONSTANTS)
    assert (match.match_id, match.start_time, match.duration_seconds) == (
        8919844500,
        1785348579,
        1522,
    )
    assert (match.game_mode, match.lobby_type, match.avg_rank_tier, match.radiant_win) == (
        23,
        0,
        54,
        True,
    )
    assert match.heroes(Side.RADIANT) == (98, 121, 20, 94, 85)
    assert match.heroes(Side.DIRE) == (96, 4, 40, 22, 97)
    assert [p.player_slot for p in match.players] == [0, 1, 2, 3, 4, 128, 129, 130, 131, 132]
    assert all(p.kills is None and p.account_id is None for p in match.players)
    assert match.patch == "7.41"
    assert transform.skip_reason(match, CONSTANTS) is SkipReason.UNSUPPORTED_GAME_MODE  # Turbo


def test_undated_2024_rows_take_the_default_patch(data_dir: Path) -> None:
    row = _csv_rows(data_dir, "opendota-public-matches-2024-08")[0]
    assert row["start_time"] == ""
    assert transform.from_public_match(row).patch is None
    match = transform.from_public_match(row, default_patch="7.37")
    assert (match.patch, match.start_time) == ("7.37", None)


def test_a_default_patch_never_overrides_a_start_time(data_dir: Path) -> None:
    row = _csv_rows(data_dir, "opendota-public-matches-2026-07")[0]
    assert transform.from_public_match(row, default_patch="7.37").patch == "7.41"


def test_trackdota_row_with_its_draft_in_order(data_dir: Path) -> None:
    row = _csv_rows(data_dir, "trackdota-pro-matches-2018-2019")[0]
    match = transform.from_trackdota_row(row, constants=CONSTANTS)
    assert (match.match_id, match.radiant_win, match.duration_seconds) == (3888582250, False, 2771)
    assert match.heroes(Side.RADIANT) == (52, 38, 107, 68, 41)
    assert match.heroes(Side.DIRE) == (91, 72, 3, 104, 23)
    steps = [(s.order, s.side, s.is_pick, s.hero_id) for s in match.picks_bans]
    assert len(steps) == 22
    assert steps[0] == (0, Side.DIRE, False, 89)
    assert steps[6] == (6, Side.DIRE, True, 91)
    assert steps[21] == (21, Side.RADIANT, True, 41)
    # Picks in draft order are the teams in pick order.
    assert tuple(h for _, side, pick, h in steps if pick and side is Side.RADIANT) == (
        match.heroes(Side.RADIANT)
    )
    # Undated, and the source states neither game mode nor lobby type.
    assert (match.patch, match.start_time, match.game_mode, match.lobby_type) == (
        None,
        None,
        None,
        None,
    )
    assert match.source is MatchSource.IMPORT


def test_trackdota_rows_with_bans_only_or_no_draft_are_kept(data_dir: Path) -> None:
    rows = _csv_rows(data_dir, "trackdota-pro-matches-2018-2019")
    partial = next(r for r in rows if r["picks_bans"] and ":P:" not in r["picks_bans"])
    empty = next(r for r in rows if not r["picks_bans"])
    match = transform.from_trackdota_row(partial)
    assert match.picks_bans
    assert not any(s.is_pick for s in match.picks_bans)
    assert transform.from_trackdota_row(empty).picks_bans == ()


def test_uci_row(data_dir: Path) -> None:
    row = _csv_rows(data_dir, "uci-dota2-games-2016")[0]
    assert row["row_id"] == "2"
    match = transform.from_uci_row(row, constants=CONSTANTS)
    assert match.match_id == transform.UCI_ID_NAMESPACE | 2
    assert match.match_id >= 2**62  # never a Valve id
    assert (match.radiant_win, match.cluster, match.patch) == (True, 152, "6.88")
    assert match.heroes(Side.RADIANT) == (4, 14, 26, 27, 71)  # team 1
    assert match.heroes(Side.DIRE) == (6, 21, 35, 93, 98)
    # The donor's game_mode / game_type codes are not Valve's and are not mapped.
    assert (match.game_mode, match.lobby_type, match.duration_seconds) == (None, None, None)
    assert transform.skip_reason(match, CONSTANTS) is None


# --- Rejections --------------------------------------------------------------------------------

BASE_ROW: dict[str, Any] = {
    "match_id": 8919844504,
    "radiant_win": 1,
    "start_time": 1_785_348_583,
    "duration": 2784,
    "lobby_type": 7,
    "game_mode": 22,
    "avg_rank_tier": 71,
    "radiant_team": "64 26 11 96 128",
    "dire_team": "93 87 84 14 74",
}


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (
            {"radiant_team": "64 26 11 96 9999"},
            RejectReason.UNKNOWN_HERO,
            "radiant_team: hero_id=9999",
        ),
        ({"dire_team": "93 87 84 14 24"}, RejectReason.UNKNOWN_HERO, "dire_team: hero_id=24"),
        ({"duration": -5}, RejectReason.INVALID_VALUE, "duration=-5"),
        ({"duration": "-5"}, RejectReason.INVALID_VALUE, "duration=-5"),
        ({"radiant_win": None}, RejectReason.MISSING_FIELD, "radiant_win is missing"),
        ({"radiant_win": ""}, RejectReason.MISSING_FIELD, "radiant_win is missing"),
        ({"radiant_win": "maybe"}, RejectReason.INVALID_VALUE, "radiant_win='maybe'"),
        ({"radiant_team": "64 26 11 96"}, RejectReason.INVALID_VALUE, "teams have 4 and 5 heroes"),
        ({"dire_team": "93 87 84 14 74 1"}, RejectReason.INVALID_VALUE, "teams have 5 and 6"),
        ({"dire_team": "93 87 84 14 64"}, RejectReason.INVALID_VALUE, "hero_id=64 is picked twice"),
        ({"radiant_team": "64 64 11 96 128"}, RejectReason.INVALID_VALUE, "hero_id=64 is picked"),
        ({"radiant_team": None}, RejectReason.MISSING_FIELD, "radiant_team is missing"),
        ({"radiant_team": "64 26 x 96 128"}, RejectReason.INVALID_VALUE, "radiant_team='64 26 x"),
        ({"radiant_team": [64, 26, 11, 96, 1.5]}, RejectReason.INVALID_VALUE, "1.5]"),
        ({"radiant_team": [64, 26, 11, 96, True]}, RejectReason.INVALID_VALUE, "True]"),
        ({"radiant_team": 64}, RejectReason.MISSING_FIELD, "radiant_team is missing"),
        ({"match_id": "abc"}, RejectReason.INVALID_VALUE, "match_id='abc' is not an integer"),
        ({"match_id": 8919844504.5}, RejectReason.INVALID_VALUE, "match_id=8919844504.5"),
        ({"match_id": True}, RejectReason.INVALID_VALUE, "match_id=True"),
        ({"match_id": -3}, RejectReason.INVALID_VALUE, "match_id=-3"),
        ({"match_id": None}, RejectReason.MISSING_FIELD, "match_id is missing"),
        ({"start_time": -1}, RejectReason.INVALID_VALUE, "start_time=-1"),
        ({"avg_rank_tier": 300}, RejectReason.INVALID_VALUE, "avg_rank_tier=300"),
    ],
)
def test_bad_public_rows_are_rejected_naming_field_and_value(
    change: dict[str, Any], reason: RejectReason, words: str
) -> None:
    error = _rejected(lambda: transform.from_public_match({**BASE_ROW, **change}))
    assert error.reason is reason
    assert words in error.detail


def test_a_valve_id_in_the_uci_namespace_is_rejected() -> None:
    row = {**BASE_ROW, "match_id": transform.UCI_ID_NAMESPACE | 2}
    error = _rejected(lambda: transform.from_public_match(row))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "match_id=" in error.detail


def test_the_unchanged_base_row_is_valid() -> None:
    match = transform.from_public_match(BASE_ROW)
    assert transform.skip_reason(match, CONSTANTS) is None
    assert (
        transform.from_public_match({**BASE_ROW, "match_id": 8919844504.0}).match_id == 8919844504
    )


def _steam_change(raw: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    changed = copy.deepcopy(raw)
    change(changed)
    return changed


def _set_player(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        raw["players"][index].update(fields)

    return change


def _set_step(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        raw["picks_bans"][index].update(fields)

    return change


def _set(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        raw.update(fields)

    return change


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    def change(raw: dict[str, Any]) -> None:
        del raw[name]

    return change


@pytest.mark.parametrize(
    ("change", "reason", "words"),
    [
        (_set_player(0, hero_id=9999), RejectReason.UNKNOWN_HERO, "players: hero_id=9999"),
        (_set_player(6, hero_id=107), RejectReason.INVALID_VALUE, "hero_id=107 is picked twice"),
        (_set(duration=-5), RejectReason.INVALID_VALUE, "duration=-5"),
        (_drop("radiant_win"), RejectReason.MISSING_FIELD, "radiant_win is missing"),
        (_drop("players"), RejectReason.MISSING_FIELD, "players is missing"),
        (_set(match_id="3254426673x"), RejectReason.INVALID_VALUE, "match_id='3254426673x'"),
        (_set_player(0, hero_id="Axe"), RejectReason.INVALID_VALUE, "hero_id='Axe'"),
        (_set_player(5, player_slot=4), RejectReason.INVALID_VALUE, "player_slot=4 is used twice"),
        (_set_player(5, player_slot=5), RejectReason.INVALID_VALUE, "player_slot=5 is not"),
        (_set_player(3, gold_per_min=70000), RejectReason.INVALID_VALUE, "gold_per_min=70000"),
        (_set_player(3, kills=-1), RejectReason.INVALID_VALUE, "kills=-1"),
        (_set_player(3, account_id=2**40), RejectReason.INVALID_VALUE, "account_id=1099511627776"),
        (_set_step(0, hero_id=9999), RejectReason.UNKNOWN_HERO, "picks_bans: hero_id=9999"),
        (_set_step(0, team=2), RejectReason.INVALID_VALUE, "picks_bans[0] team=2"),
        (_set_step(1, order=0), RejectReason.INVALID_VALUE, "order=0 appears twice"),
        (_set_step(0, is_pick="perhaps"), RejectReason.INVALID_VALUE, "is_pick='perhaps'"),
    ],
)
def test_bad_steam_matches_are_rejected_naming_field_and_value(
    data_dir: Path,
    change: Callable[[dict[str, Any]], None],
    reason: RejectReason,
    words: str,
) -> None:
    raw = _steam(data_dir, "odota-core/details_api_pro.json")
    assert raw["players"][0]["hero_id"] == 107
    error = _rejected(lambda: transform.from_steam_match(_steam_change(raw, change)))
    assert error.reason is reason
    assert words in error.detail


def test_a_team_of_six_is_rejected(data_dir: Path) -> None:
    raw = _steam(data_dir, "odota-core/sequence_api.json")["matches"][0]
    changed = _steam_change(raw, _set_player(5, team_number=0))  # a dire slot says radiant
    error = _rejected(lambda: transform.from_steam_match(changed))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "radiant has 6 and dire 4 heroes" in error.detail


def test_a_pick_credited_to_the_wrong_side_is_rejected(data_dir: Path) -> None:
    raw = _steam(data_dir, "odota-core/details_api_pro.json")
    first_pick = next(i for i, s in enumerate(raw["picks_bans"]) if s["is_pick"])
    team = raw["picks_bans"][first_pick]["team"]
    changed = _steam_change(raw, _set_step(first_pick, team=1 - team))
    error = _rejected(lambda: transform.from_steam_match(changed))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "but the other side played it" in error.detail


def test_a_lost_ban_without_hero_is_dropped_not_rejected(data_dir: Path) -> None:
    raw = _steam(data_dir, "odota-core/details_api_pro.json")
    match = transform.from_steam_match(_steam_change(raw, _set_step(0, hero_id=0)))
    assert len(match.picks_bans) == len(raw["picks_bans"]) - 1


@pytest.mark.parametrize(
    ("row", "reason", "words"),
    [
        ({"picks_bans": "0:1:B:89;1:0:X:16"}, RejectReason.INVALID_VALUE, "'1:0:X:16'"),
        ({"picks_bans": "0:2:B:89"}, RejectReason.INVALID_VALUE, "team='2'"),
        ({"picks_bans": "0:1:B:9999"}, RejectReason.UNKNOWN_HERO, "hero_id=9999"),
        ({"picks_bans": "0:1:B:89;0:0:B:16"}, RejectReason.INVALID_VALUE, "order=0 appears twice"),
        ({"picks_bans": "0:1:P:52"}, RejectReason.INVALID_VALUE, "the other side played it"),
        ({"radiant_win": "2"}, RejectReason.INVALID_VALUE, "radiant_win='2'"),
    ],
)
def test_bad_trackdota_rows(
    data_dir: Path, row: dict[str, str], reason: RejectReason, words: str
) -> None:
    base = _csv_rows(data_dir, "trackdota-pro-matches-2018-2019")[0]
    error = _rejected(lambda: transform.from_trackdota_row({**base, **row}))
    assert error.reason is reason
    assert words in error.detail


def test_bad_uci_rows(data_dir: Path) -> None:
    base = _csv_rows(data_dir, "uci-dota2-games-2016")[0]
    error = _rejected(lambda: transform.from_uci_row({**base, "team2_heroes": "6 21 35 93"}))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "team2_heroes='6 21 35 93'" in error.detail
    error = _rejected(lambda: transform.from_uci_row({**base, "row_id": "0"}))
    assert "row_id=0" in error.detail


# --- Significance ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"game_mode": 23}, SkipReason.UNSUPPORTED_GAME_MODE),  # Turbo
        ({"game_mode": 18}, SkipReason.UNSUPPORTED_GAME_MODE),  # Ability Draft
        ({"game_mode": 2}, None),  # Captain's Mode
        ({"lobby_type": 4}, SkipReason.UNSUPPORTED_LOBBY_TYPE),  # co-op with bots
        ({"lobby_type": 0}, None),
        ({"duration": 360}, SkipReason.TOO_SHORT),
        ({"duration": 361}, None),
        ({"duration": None, "game_mode": None, "lobby_type": None}, None),  # unknown: not applied
    ],
)
def test_significance_rule(change: dict[str, Any], reason: SkipReason | None) -> None:
    match = transform.from_public_match({**BASE_ROW, **change})
    assert transform.skip_reason(match, CONSTANTS) is reason


@pytest.mark.parametrize(
    ("leaver_status", "reason"),
    [(0, None), (1, None), (2, SkipReason.ABANDONED), (5, SkipReason.ABANDONED)],
)
def test_abandons(data_dir: Path, leaver_status: int, reason: SkipReason | None) -> None:
    raw = _steam(data_dir, "odota-core/details_api.json")
    match = transform.from_steam_match(
        _steam_change(raw, _set_player(4, leaver_status=leaver_status))
    )
    assert transform.skip_reason(match, CONSTANTS) is reason


def test_a_short_real_match_is_too_short(data_dir: Path) -> None:
    raw = _steam(data_dir, "dota2api-steam/get_match_history_by_sequence_num_result.json")
    short = next(
        m
        for m in raw["matches"]
        if m["duration"] <= 360 and all(p["hero_id"] for p in m["players"])
    )
    match = transform.from_steam_match(short)
    assert transform.skip_reason(match, CONSTANTS) is SkipReason.TOO_SHORT


@pytest.mark.parametrize(
    ("rank", "bracket"),
    [
        (None, "unknown"),
        (0, "unknown"),
        (5, "unknown"),
        (11, "herald_guardian"),
        (25, "herald_guardian"),
        (31, "crusader_archon"),
        (45, "crusader_archon"),
        (54, "legend_ancient"),
        (65, "legend_ancient"),
        (71, "divine_immortal"),
        (80, "divine_immortal"),
        (90, "unknown"),
        (-10, "unknown"),
    ],
)
def test_skill_bracket_from_rank_tier(rank: int | None, bracket: str) -> None:
    assert SkillBracket.from_rank_tier(rank) == bracket


# --- Throughput --------------------------------------------------------------------------------


def test_public_match_throughput_printed(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """How fast from_public_match runs over the 2026-07 set (printed, not asserted)."""
    rows = _csv_rows(data_dir, "opendota-public-matches-2026-07")
    started = time.perf_counter()
    for row in rows:
        transform.from_public_match(row, constants=CONSTANTS)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\nfrom_public_match: {len(rows) / elapsed:,.0f} matches/s over {len(rows):,} rows")
    assert len(rows) == 65_134


# --- More recorded samples and simple public rows ---------------------------------------------


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
    skipped = []
    for raw in matches:
        try:
            parsed.append(transform.from_steam_match(raw))
        except UnusableMatch as error:
            rejected.append(error.reason)
        except InsignificantMatch as insignificant:
            skipped.append(insignificant.reason)
    assert len(parsed) + len(skipped) == 100
    assert rejected == []
    assert skipped == [SkipReason.INCOMPLETE]  # one 2011 beta bot match lists a hero twice
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


SIMPLE_ROW: dict[str, Any] = {
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
def test_bad_simple_rows_are_rejected_with_reason_and_field(
    change: dict[str, Any], reason: RejectReason, words: str
) -> None:
    with pytest.raises(UnusableMatch) as raised:
        transform.from_public_match({**SIMPLE_ROW, **change})
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
def test_significance_rule_with_the_default_constants(
    change: dict[str, Any], reason: SkipReason | None
) -> None:
    assert transform.skip_reason(transform.from_public_match({**SIMPLE_ROW, **change})) is reason


def test_abandon_is_skipped(data_dir: Path) -> None:
    raw = _json(data_dir, "odota-core/details_api.json")["result"]
    raw["players"][3]["leaver_status"] = 3
    assert transform.skip_reason(transform.from_steam_match(raw)) is SkipReason.ABANDONED


# --- Insignificance wins over flawed players -----------------------------------------------------


def _dup_hero(raw: dict[str, Any]) -> None:
    raw["players"][1]["hero_id"] = raw["players"][0]["hero_id"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"game_mode": 23}, SkipReason.UNSUPPORTED_GAME_MODE),
        ({"lobby_type": 4}, SkipReason.UNSUPPORTED_LOBBY_TYPE),
        ({"duration": 200}, SkipReason.TOO_SHORT),
        ({"human_players": 3}, SkipReason.INCOMPLETE),
    ],
)
def test_an_insignificant_match_with_a_hero_twice_is_skipped(
    data_dir: Path, change: dict[str, Any], reason: SkipReason
) -> None:
    raw = _steam_change(_steam(data_dir, "odota-core/details_api.json"), _dup_hero)
    raw.update(change)
    with pytest.raises(InsignificantMatch) as raised:
        transform.from_steam_match(raw)
    assert raised.value.reason is reason
    assert "picked twice" in raised.value.detail


def test_a_significant_match_with_a_hero_twice_is_still_rejected(data_dir: Path) -> None:
    raw = _steam_change(_steam(data_dir, "odota-core/details_api.json"), _dup_hero)
    error = _rejected(lambda: transform.from_steam_match(raw))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "picked twice" in error.detail


def test_an_insignificant_match_without_players_is_still_rejected(data_dir: Path) -> None:
    raw = copy.deepcopy(_steam(data_dir, "odota-core/details_api.json"))
    raw["game_mode"] = 23
    del raw["players"]
    error = _rejected(lambda: transform.from_steam_match(raw))
    assert error.reason is RejectReason.MISSING_FIELD


def test_an_insignificant_match_with_a_bad_header_is_still_rejected(data_dir: Path) -> None:
    raw = _steam_change(_steam(data_dir, "odota-core/details_api.json"), _dup_hero)
    raw.update(game_mode=23, duration=-5)
    error = _rejected(lambda: transform.from_steam_match(raw))
    assert error.reason is RejectReason.INVALID_VALUE
    assert "duration" in error.detail


def test_a_turbo_draft_row_with_a_hero_twice_is_skipped() -> None:
    row = {**SIMPLE_ROW, "game_mode": 23, "dire_team": "6 7 8 9 1"}
    with pytest.raises(InsignificantMatch) as raised:
        transform.from_public_match(row)
    assert raised.value.reason is SkipReason.UNSUPPORTED_GAME_MODE
    ranked = {**SIMPLE_ROW, "dire_team": "6 7 8 9 1"}
    assert (
        _rejected(lambda: transform.from_public_match(ranked)).reason is RejectReason.INVALID_VALUE
    )
