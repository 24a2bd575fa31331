"""Player-level records (account, hero, result) to CleanMatch, for the personal advantage score.

Pure functions, like transform.py, for the three player-level formats the dump reader knows:
- trackdota pro players (2018-2019): `match_id,account_id,hero_id,is_radiant,win`, ten rows a
  match. When the trackdota matches file lies beside it, the match row (draft, duration) is
  merged in, so the stored match is the same one the matches file gives, now with account ids.
  The set is undated: start time and patch stay unknown, as for the matches file.
- OpenDota pro players (2020-2021): `match_id,start_time,account_id,hero_id,win,league_name`,
  ten rows a match, no side and no draft. The two teams are real (the five winners, the five
  losers) but which was Radiant is not in the source, and the warehouse has no "unknown side":
  the winners are stored as Radiant for even match ids and as Dire for odd ones, so that side-
  aware statistics see no false Radiant advantage. That side label is not data; nothing should
  read a side out of these matches. The league name has no column and is dropped.
- one player's match history from OpenDota GET /api/players/{account_id}/matches: one row a
  match (hero_id, player_slot, radiant_win, start_time, duration, game_mode, lobby_type, kills,
  deaths, assists, leaver_status). The response does not repeat the account id; the dump reader
  takes it from the file's name. Only that player is known: the match is stored with one player
  and no draft (its hero arrays hold one hero, so draft statistics never count it).

Significance: the usual rule (game mode, lobby type, duration, abandons), except that a match
whose source lists fewer than ten players is not skipped as INCOMPLETE (`skip_reason`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.common.dota import PLAYERS_PER_MATCH, TEAM_SIZE, Side
from services.common.dota_constants import DotaConstants
from services.etl import transform
from services.etl.matches import (
    CleanMatch,
    MatchSource,
    PlayerRow,
    RejectReason,
    SkipReason,
    UnusableMatch,
)

_U8, _U16, _U32 = 0xFF, 0xFFFF, 0xFFFF_FFFF
_RADIANT_SLOTS = range(0, 5)
_DIRE_SLOTS = range(128, 133)


def _invalid(detail: str) -> UnusableMatch:
    return UnusableMatch(RejectReason.INVALID_VALUE, detail)


def _required_int(raw: Mapping[str, Any], name: str, high: int, low: int = 0) -> int:
    value = raw.get(name)
    if value is None or value == "":
        raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
    if isinstance(value, bool):
        raise _invalid(f"{name}={value!r} is not an integer")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise _invalid(f"{name}={value!r} is not an integer") from None
    if not low <= number <= high:
        raise _invalid(f"{name}={number} is outside {low}..{high}")
    return number


def _optional_int(raw: Mapping[str, Any], name: str, high: int) -> int | None:
    value = raw.get(name)
    if value is None or value == "":
        return None
    return _required_int(raw, name, high)


def _flag(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name)
    if value in (True, 1, "1", "true", "True"):
        return True
    if value in (False, 0, "0", "false", "False"):
        return False
    if value is None or value == "":
        raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
    raise _invalid(f"{name}={value!r} is not a boolean")


def _hero(raw: Mapping[str, Any], constants: DotaConstants) -> int:
    hero = _required_int(raw, "hero_id", _U16)
    if hero not in constants.heroes:
        raise UnusableMatch(RejectReason.UNKNOWN_HERO, f"hero_id={hero} is not a known hero")
    return hero


def _account(raw: Mapping[str, Any]) -> int | None:
    account = _optional_int(raw, "account_id", _U32)
    return None if account == transform.ANONYMOUS_ACCOUNT else account


def _one_match(rows: Sequence[Mapping[str, Any]]) -> int:
    match_id = _required_int(rows[0], "match_id", 0xFFFF_FFFF_FFFF_FFFF, low=1)
    if len(rows) != PLAYERS_PER_MATCH:
        raise _invalid(f"match {match_id} has {len(rows)} player rows, expected 10")
    return match_id


def _check_teams(match_id: int, players: Sequence[PlayerRow]) -> None:
    heroes = {player.hero_id for player in players}
    if len(heroes) != len(players):
        raise _invalid(f"match {match_id}: a hero is listed twice")
    radiant = sum(player.side is Side.RADIANT for player in players)
    if radiant != TEAM_SIZE:
        raise _invalid(f"match {match_id}: {radiant} Radiant players, expected 5")


def from_trackdota_players(
    rows: Sequence[Mapping[str, Any]],
    match_row: Mapping[str, Any] | None,
    constants: DotaConstants,
    *,
    source: MatchSource = MatchSource.IMPORT,
) -> CleanMatch:
    """One trackdota match from its ten player rows, merged with its match row when known."""
    match_id = _one_match(rows)
    sides = {_hero(row, constants): _flag(row, "is_radiant") for row in rows}
    wins = {_hero(row, constants): _flag(row, "win") for row in rows}
    accounts = {_hero(row, constants): _account(row) for row in rows}
    if len(sides) != PLAYERS_PER_MATCH:
        raise _invalid(f"match {match_id}: a hero is listed twice")
    radiant_wins = {wins[hero] == sides[hero] for hero in sides}
    if len(radiant_wins) != 1:
        raise _invalid(f"match {match_id}: players of one team disagree on the result")
    radiant_win = radiant_wins.pop()
    if match_row is not None:
        base = transform.from_trackdota_row(match_row, source=source, constants=constants)
        if base.radiant_win != radiant_win:
            raise _invalid(f"match {match_id}: player rows and match row disagree on the winner")
        listed = {player.hero_id: player.side is Side.RADIANT for player in base.players}
        if listed != sides:
            raise _invalid(f"match {match_id}: player rows and match row list other heroes")
        players = tuple(
            PlayerRow(p.hero_id, p.side, p.player_slot, accounts[p.hero_id]) for p in base.players
        )
        return CleanMatch(
            match_id=base.match_id,
            radiant_win=base.radiant_win,
            source=base.source,
            players=players,
            duration_seconds=base.duration_seconds,
            patch=base.patch,
            picks_bans=base.picks_bans,
        )
    players = _slotted(
        match_id,
        [
            (hero, Side.RADIANT if radiant else Side.DIRE, accounts[hero])
            for hero, radiant in sides.items()
        ],
    )
    return CleanMatch(match_id=match_id, radiant_win=radiant_win, source=source, players=players)


def from_pro_players(
    rows: Sequence[Mapping[str, Any]],
    constants: DotaConstants,
    *,
    source: MatchSource = MatchSource.IMPORT,
) -> CleanMatch:
    """One 2020-21 league match from its ten side-less player rows (see the module docstring
    for the side label)."""
    match_id = _one_match(rows)
    start_times = {_required_int(row, "start_time", _U32) for row in rows}
    if len(start_times) != 1:
        raise _invalid(f"match {match_id}: player rows disagree on start_time")
    start_time = start_times.pop()
    winners_are_radiant = match_id % 2 == 0
    entries = []
    for row in rows:
        won = _flag(row, "win")
        side = Side.RADIANT if won == winners_are_radiant else Side.DIRE
        entries.append((_hero(row, constants), side, _account(row)))
    return CleanMatch(
        match_id=match_id,
        radiant_win=winners_are_radiant,
        source=source,
        players=_slotted(match_id, entries),
        start_time=start_time,
        patch=_patch(constants, start_time),
    )


def from_player_match(
    raw: Mapping[str, Any],
    constants: DotaConstants,
    *,
    source: MatchSource = MatchSource.IMPORT,
) -> CleanMatch:
    """One match of a player's OpenDota match history (`account_id` added by the reader)."""
    match_id = _required_int(raw, "match_id", 0xFFFF_FFFF_FFFF_FFFF, low=1)
    slot = _required_int(raw, "player_slot", _U8)
    if slot not in _RADIANT_SLOTS and slot not in _DIRE_SLOTS:
        raise _invalid(f"player_slot={slot} is not 0-4 or 128-132")
    start_time = _optional_int(raw, "start_time", _U32)
    match = CleanMatch(
        match_id=match_id,
        radiant_win=_flag(raw, "radiant_win"),
        source=source,
        players=(),
        start_time=start_time,
        duration_seconds=_optional_int(raw, "duration", _U32),
        patch=_patch(constants, start_time),
        game_mode=_optional_int(raw, "game_mode", _U8),
        lobby_type=_optional_int(raw, "lobby_type", _U8),
    )
    # Significance first, as transform.py does: a flawed hero in a match that is skipped anyway
    # is a skip, not a reject (the history holds custom games with hero_id 0).
    leaver = _optional_int(raw, "leaver_status", _U8)
    if skip_reason(match, constants) is None and not (leaver is not None and leaver > 1):
        hero = _hero(raw, constants)
    else:
        hero = _required_int(raw, "hero_id", _U16)
    match.players = (
        PlayerRow(
            hero_id=hero,
            side=Side.RADIANT if slot < 128 else Side.DIRE,
            player_slot=slot,
            account_id=_account(raw),
            kills=_optional_int(raw, "kills", _U16),
            deaths=_optional_int(raw, "deaths", _U16),
            assists=_optional_int(raw, "assists", _U16),
            leaver_status=leaver,
        ),
    )
    return match


def skip_reason(match: CleanMatch, constants: DotaConstants) -> SkipReason | None:
    """OpenDota's significance rule without its "ten players" part: player-level sources list
    only the players they know."""
    reason = transform.skip_reason(match, constants)
    return None if reason is SkipReason.INCOMPLETE else reason


def _patch(constants: DotaConstants, start_time: int | None) -> str | None:
    if start_time is None:
        return None
    patch = constants.patch_at(start_time)
    return patch.name if patch is not None else None


def _slotted(
    match_id: int, entries: Sequence[tuple[int, Side, int | None]]
) -> tuple[PlayerRow, ...]:
    """Players in slots 0-4 (Radiant) and 128-132 (Dire) in the order listed."""
    next_slot = {Side.RADIANT: 0, Side.DIRE: 128}
    players = []
    for hero, side, account in entries:
        players.append(PlayerRow(hero, side, next_slot[side], account))
        next_slot[side] += 1
    _check_teams(match_id, players)
    return tuple(players)
