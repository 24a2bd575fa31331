"""From every real source format to a CleanMatch, and OpenDota's "significant match" rule.

Pure functions over decoded JSON / CSV rows: no I/O, no protobuf, no storage. Formats:
Steam GetMatchDetails and GetMatchHistoryBySequenceNum match objects, OpenDota /api/matches/{id},
OpenDota /api/publicMatches rows (and the CSV data sets in that shape), the trackdota pro CSV and
the UCI 2016 CSV. Invalid input raises UnusableMatch naming the field and the value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.common.dota_constants import DotaConstants, load_constants
from services.etl.matches import (
    CleanMatch,
    MatchSource,
    PickBanRow,
    PlayerRow,
    RejectReason,
    Side,
    SkipReason,
    UnusableMatch,
)

ANONYMOUS_ACCOUNT = 4294967295
# UCI rows have no match id: ids in this namespace can never collide with Valve's (< 2**40).
UCI_ID_NAMESPACE = 1 << 62
UCI_START_TIME = int(datetime(2016, 8, 13, 12, tzinfo=UTC).timestamp())
MIN_SIGNIFICANT_SECONDS = 360  # OpenDota: duration > 6 minutes
_ITEM_SLOTS = tuple(f"item_{n}" for n in range(6))


def _int(raw: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    value = raw.get(name)
    if type(value) is int:  # the common case, checked first: this runs ~40 times per match
        return value
    if value is None or value == "":
        if required:
            raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
        return None
    if isinstance(value, bool):
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnusableMatch(
            RejectReason.INVALID_VALUE, f"{name}={value!r} is not an integer"
        ) from None


def _bool(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name)
    if value is None or value == "":
        raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
    if isinstance(value, bool):
        return value
    if value in (1, "1", "true", "True"):
        return True
    if value in (0, "0", "false", "False"):
        return False
    raise UnusableMatch(RejectReason.INVALID_VALUE, f"{name}={value!r} is not a boolean")


def _non_negative(value: int | None, name: str) -> int | None:
    if value is not None and value < 0:
        raise UnusableMatch(RejectReason.INVALID_VALUE, f"{name}={value} is negative")
    return value


def _check_heroes(players: Sequence[PlayerRow], constants: DotaConstants, *, full: bool) -> None:
    heroes = constants.heroes
    seen: set[int] = set()
    for player in players:
        if player.hero_id not in heroes:
            raise UnusableMatch(
                RejectReason.UNKNOWN_HERO, f"hero_id={player.hero_id} does not exist"
            )
        if player.hero_id in seen:
            raise UnusableMatch(
                RejectReason.INVALID_VALUE, f"hero_id={player.hero_id} is picked twice"
            )
        seen.add(player.hero_id)
    if full:
        radiant = sum(1 for p in players if p.side is Side.RADIANT)
        if radiant != 5 or len(players) != 10:
            raise UnusableMatch(
                RejectReason.INVALID_VALUE,
                f"teams have {radiant} and {len(players) - radiant} heroes, expected 5 and 5",
            )


def _patch(constants: DotaConstants, start_time: int | None, default: str | None) -> str | None:
    if start_time is None:
        return default
    patch = constants.patch_at(start_time)
    return patch.name if patch is not None else default


def _side_of(raw_player: Mapping[str, Any], slot: int) -> Side:
    team = raw_player.get("team_number")
    if team in (0, 1):
        return Side.RADIANT if team == 0 else Side.DIRE
    return Side.RADIANT if slot < 128 else Side.DIRE


def _stat(raw_player: Mapping[str, Any], name: str) -> int | None:
    """An optional non-negative player statistic (the hot path: ~10 per player)."""
    value = raw_player.get(name)
    if type(value) is int and value >= 0:
        return value
    return _non_negative(_int(raw_player, name, required=False), name)


def _players_from_api(raw: Mapping[str, Any], constants: DotaConstants) -> tuple[PlayerRow, ...]:
    raw_players = raw.get("players")
    if not isinstance(raw_players, list):
        raise UnusableMatch(RejectReason.MISSING_FIELD, "players is missing")
    players = []
    for raw_player in raw_players:
        if not isinstance(raw_player, Mapping):
            raise UnusableMatch(RejectReason.INVALID_VALUE, "a player is not an object")
        hero_id = _int(raw_player, "hero_id")
        assert hero_id is not None
        if hero_id == 0:
            continue  # an empty slot (player never picked): makes the match incomplete
        slot = _int(raw_player, "player_slot")
        assert slot is not None
        account = _int(raw_player, "account_id", required=False)
        items = tuple(
            item for n in _ITEM_SLOTS if type(item := raw_player.get(n)) is int and item > 0
        )
        players.append(
            PlayerRow(
                hero_id,
                _side_of(raw_player, slot),
                slot,
                None if account in (None, ANONYMOUS_ACCOUNT) else account,
                None,
                _stat(raw_player, "lane_role"),
                _stat(raw_player, "kills"),
                _stat(raw_player, "deaths"),
                _stat(raw_player, "assists"),
                _stat(raw_player, "gold_per_min"),
                _stat(raw_player, "xp_per_min"),
                items,
                _stat(raw_player, "leaver_status"),
            )
        )
    _check_heroes(players, constants, full=False)
    return tuple(players)


def _picks_bans(raw: Mapping[str, Any], constants: DotaConstants) -> tuple[PickBanRow, ...]:
    steps = raw.get("picks_bans")
    if not isinstance(steps, list):
        return ()
    rows = []
    for index, step in enumerate(steps):
        hero_id = _int(step, "hero_id")
        assert hero_id is not None
        if hero_id not in constants.heroes:
            raise UnusableMatch(
                RejectReason.UNKNOWN_HERO, f"picks_bans hero_id={hero_id} does not exist"
            )
        order = _int(step, "order", required=False)
        rows.append(
            PickBanRow(
                order=index if order is None else order,
                is_pick=_bool(step, "is_pick"),
                side=Side.RADIANT if _int(step, "team") == 0 else Side.DIRE,
                hero_id=hero_id,
            )
        )
    return tuple(sorted(rows, key=lambda row: row.order))


def _from_api_match(
    raw: Mapping[str, Any], source: MatchSource, constants: DotaConstants
) -> CleanMatch:
    match_id = _int(raw, "match_id")
    assert match_id is not None
    start_time = _int(raw, "start_time", required=False)
    rank = _int(raw, "avg_rank_tier", required=False)
    return CleanMatch(
        match_id=match_id,
        radiant_win=_bool(raw, "radiant_win"),
        source=source,
        players=_players_from_api(raw, constants),
        start_time=start_time,
        match_seq_num=_int(raw, "match_seq_num", required=False),
        duration_seconds=_non_negative(_int(raw, "duration", required=False), "duration"),
        patch=_patch(constants, start_time, None),
        game_mode=_int(raw, "game_mode", required=False),
        lobby_type=_int(raw, "lobby_type", required=False),
        cluster=_int(raw, "cluster", required=False),
        region=_int(raw, "region", required=False),
        avg_rank_tier=rank,
        picks_bans=_picks_bans(raw, constants),
    )


def from_steam_match(
    raw: Mapping[str, Any],
    source: MatchSource = MatchSource.STEAM_SEQUENCE,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """A Steam GetMatchDetails `result` or one GetMatchHistoryBySequenceNum match."""
    return _from_api_match(raw, source, constants or load_constants())


def from_opendota_match(
    raw: Mapping[str, Any], constants: DotaConstants | None = None
) -> CleanMatch:
    """An OpenDota GET /api/matches/{id} object."""
    return _from_api_match(raw, MatchSource.OPENDOTA_MATCH, constants or load_constants())


def _hero_list(value: Any, name: str) -> list[int]:
    if isinstance(value, str):
        parts = value.replace(",", " ").split()
    elif isinstance(value, list):
        parts = value
    else:
        raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
    try:
        return [int(part) for part in parts]
    except (TypeError, ValueError):
        raise UnusableMatch(
            RejectReason.INVALID_VALUE, f"{name}={value!r} is not a hero list"
        ) from None


def _draft_players(
    radiant: list[int], dire: list[int], constants: DotaConstants
) -> tuple[PlayerRow, ...]:
    if len(radiant) != 5 or len(dire) != 5:
        raise UnusableMatch(
            RejectReason.INVALID_VALUE,
            f"teams have {len(radiant)} and {len(dire)} heroes, expected 5 and 5",
        )
    radiant_side, dire_side = Side.RADIANT, Side.DIRE
    players = (
        PlayerRow(radiant[0], radiant_side, 0),
        PlayerRow(radiant[1], radiant_side, 1),
        PlayerRow(radiant[2], radiant_side, 2),
        PlayerRow(radiant[3], radiant_side, 3),
        PlayerRow(radiant[4], radiant_side, 4),
        PlayerRow(dire[0], dire_side, 128),
        PlayerRow(dire[1], dire_side, 129),
        PlayerRow(dire[2], dire_side, 130),
        PlayerRow(dire[3], dire_side, 131),
        PlayerRow(dire[4], dire_side, 132),
    )
    heroes = constants.heroes
    for hero in (*radiant, *dire):
        if hero not in heroes:
            raise UnusableMatch(RejectReason.UNKNOWN_HERO, f"hero_id={hero} does not exist")
    if len(set(radiant) | set(dire)) != 10:
        twice = next(h for h in radiant + dire if (radiant + dire).count(h) > 1)
        raise UnusableMatch(RejectReason.INVALID_VALUE, f"hero_id={twice} is picked twice")
    return players


def from_draft(
    match_id: int,
    radiant_win: bool,
    radiant: list[int],
    dire: list[int],
    *,
    source: MatchSource,
    constants: DotaConstants,
    start_time: int | None = None,
    match_seq_num: int | None = None,
    duration_seconds: int | None = None,
    game_mode: int | None = None,
    lobby_type: int | None = None,
    cluster: int | None = None,
    avg_rank_tier: int | None = None,
    default_patch: str | None = None,
) -> CleanMatch:
    """A match known only by its draft and result (already typed values, e.g. from protobuf)."""
    return CleanMatch(
        match_id=match_id,
        radiant_win=radiant_win,
        source=source,
        players=_draft_players(radiant, dire, constants),
        start_time=start_time,
        match_seq_num=match_seq_num,
        duration_seconds=_non_negative(duration_seconds, "duration"),
        patch=_patch(constants, start_time, default_patch),
        game_mode=game_mode,
        lobby_type=lobby_type,
        cluster=cluster,
        avg_rank_tier=avg_rank_tier,
    )


def from_public_match(
    row: Mapping[str, Any],
    *,
    default_patch: str | None = None,
    source: MatchSource = MatchSource.OPENDOTA_PUBLIC_MATCHES,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """An OpenDota /api/publicMatches row (int arrays or comma strings) or a CSV row of that
    shape (space-separated hero ids)."""
    match_id = _int(row, "match_id")
    assert match_id is not None
    return from_draft(
        match_id,
        _bool(row, "radiant_win"),
        _hero_list(row.get("radiant_team"), "radiant_team"),
        _hero_list(row.get("dire_team"), "dire_team"),
        source=source,
        constants=constants or load_constants(),
        start_time=_int(row, "start_time", required=False),
        match_seq_num=_int(row, "match_seq_num", required=False),
        duration_seconds=_int(row, "duration", required=False),
        game_mode=_int(row, "game_mode", required=False),
        lobby_type=_int(row, "lobby_type", required=False),
        cluster=_int(row, "cluster", required=False),
        avg_rank_tier=_int(row, "avg_rank_tier", required=False),
        default_patch=default_patch,
    )


def from_trackdota_row(
    row: Mapping[str, Any],
    *,
    default_patch: str | None = None,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """A trackdota pro match (2018-2019): teams in pick order and the full captain's-mode draft
    (`order:team:P|B:hero_id;...`, team 0 = Radiant). Pro league games are tournament lobbies."""
    constants = constants or load_constants()
    match_id = _int(row, "match_id")
    assert match_id is not None
    steps = []
    for part in str(row.get("picks_bans") or "").split(";"):
        if not part:
            continue
        try:
            order, team, kind, hero = part.split(":")
            steps.append(
                PickBanRow(
                    order=int(order),
                    is_pick=kind == "P",
                    side=Side.RADIANT if team == "0" else Side.DIRE,
                    hero_id=int(hero),
                )
            )
        except ValueError:
            raise UnusableMatch(RejectReason.INVALID_VALUE, f"picks_bans step {part!r}") from None
    for step in steps:
        if step.hero_id not in constants.heroes:
            raise UnusableMatch(
                RejectReason.UNKNOWN_HERO, f"picks_bans hero_id={step.hero_id} does not exist"
            )
    return CleanMatch(
        match_id=match_id,
        radiant_win=_bool(row, "radiant_win"),
        source=MatchSource.IMPORT,
        players=_draft_players(
            _hero_list(row.get("radiant_team"), "radiant_team"),
            _hero_list(row.get("dire_team"), "dire_team"),
            constants,
        ),
        duration_seconds=_non_negative(_int(row, "duration", required=False), "duration"),
        patch=default_patch,
        game_mode=2,  # captain's mode
        lobby_type=1,  # league games are played in practice (tournament) lobbies
        picks_bans=tuple(sorted(steps, key=lambda s: s.order)),
    )


def from_uci_row(row: Mapping[str, Any], *, constants: DotaConstants | None = None) -> CleanMatch:
    """A UCI 2016 row: no match id (a synthetic one in UCI_ID_NAMESPACE), team 1 = Radiant, all
    games on 2016-08-13 (patch 6.88); its game mode codes are the donor's, not Valve's."""
    constants = constants or load_constants()
    row_id = _int(row, "row_id")
    assert row_id is not None
    return CleanMatch(
        match_id=UCI_ID_NAMESPACE | row_id,
        radiant_win=_bool(row, "team1_win"),
        source=MatchSource.IMPORT,
        players=_draft_players(
            _hero_list(row.get("team1_heroes"), "team1_heroes"),
            _hero_list(row.get("team2_heroes"), "team2_heroes"),
            constants,
        ),
        start_time=UCI_START_TIME,
        patch=_patch(constants, UCI_START_TIME, None),
        cluster=_int(row, "cluster_id", required=False),
    )


def skip_reason(match: CleanMatch, constants: DotaConstants | None = None) -> SkipReason | None:
    """Why OpenDota would not count this match as significant, or None when it would.

    A check whose field the source does not carry (None) is not applied: the draft-only data
    sets have no leaver or duration information.
    """
    constants = constants or load_constants()
    if match.game_mode is not None and match.game_mode not in constants.balanced_game_modes:
        return SkipReason.UNSUPPORTED_GAME_MODE
    if match.lobby_type is not None and match.lobby_type not in constants.balanced_lobby_types:
        return SkipReason.UNSUPPORTED_LOBBY_TYPE
    if match.duration_seconds is not None and match.duration_seconds <= MIN_SIGNIFICANT_SECONDS:
        return SkipReason.TOO_SHORT
    if any(p.leaver_status is not None and p.leaver_status > 1 for p in match.players):
        return SkipReason.ABANDONED
    if len(match.players) != 10 or sum(p.side is Side.RADIANT for p in match.players) != 5:
        return SkipReason.INCOMPLETE
    return None
