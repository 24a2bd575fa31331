"""From every real source format to a CleanMatch, and OpenDota's "significant match" rule.

Pure functions over decoded JSON / CSV rows: no I/O, no protobuf, no storage. Formats:
- Steam GetMatchDetails `result` and GetMatchHistoryBySequenceNum `result.matches[i]`;
- OpenDota GET /api/matches/{id};
- OpenDota /api/publicMatches rows (hero lists as int arrays, or comma strings in 2018) and the
  CSV data sets in that shape (space-separated hero ids);
- the trackdota pro-match CSV (2018-2019) and the UCI 2016 CSV.

Invalid input raises UnusableMatch with the field and the value in its detail. A valid match
that should not be counted is still returned: `skip_reason` says why it is not significant.
Significance wins over the player checks: a record whose mode, lobby, duration or number of
humans already makes it insignificant raises InsignificantMatch (a skip with its reason) when
the values of its players or draft are flawed, rather than UnusableMatch (a dead letter); Steam's
2011 beta data has bot games with a hero twice. A missing field stays a dead letter.

Decisions the formats leave open:
- Patch: from start_time and dotaconstants' patch dates; a caller that knows the patch of an
  undated data set passes `default_patch` (it is used only when start_time is unknown).
- Empty Steam slots (hero_id 0) and bot slots are not players: they are left out, and the match
  then has fewer than 10 players, so `skip_reason` says INCOMPLETE (it is not rejected). Steam
  marks a bot by omitting `account_id` (an anonymous human has 4294967295); the rule is only
  applied when the match's `human_players` is below its number of player entries. OpenDota
  match objects write null for both, so there a bot cannot be told from an anonymous human.
- A team with more than 5 heroes, a hero twice in a match (bots included), a player slot outside
  0-4 / 128-132 or used twice: INVALID_VALUE, unless the match is insignificant anyway (above).
  Draft-only rows must have exactly 5 + 5 heroes.
- Values that do not fit the warehouse columns (e.g. gold_per_min > 65535, a negative count)
  are INVALID_VALUE here rather than a failed batch insert later.
- `position`: no source states one. For OpenDota parsed matches it is derived per team from the
  parser's lane_role and is_roaming and the players' farm (`services/etl/lanes.py` documents the
  rule); every other source, and a team not all of whose players were parsed, keeps None.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.common.dota import PLAYERS_PER_MATCH, TEAM_SIZE, Side
from services.common.dota_constants import DotaConstants, load_constants
from services.etl.lanes import Laner, team_positions
from services.etl.matches import (
    CleanMatch,
    InsignificantMatch,
    MatchSource,
    PickBanRow,
    PlayerRow,
    RejectReason,
    SkipReason,
    UnusableMatch,
)

ANONYMOUS_ACCOUNT = 4294967295
# UCI rows have no match id. Ids in this namespace can never collide with Valve's: Valve ids are
# about 2**33 today, and the transforms reject any other source's id at or above 2**62.
UCI_ID_NAMESPACE = 1 << 62
# "All games were played in a space of 2 hours on the 13th of August, 2016" (UCI); the hour is
# not known, noon UTC stands for the day. It puts every UCI match in patch 6.88.
UCI_START_TIME = int(datetime(2016, 8, 13, 12, tzinfo=UTC).timestamp())
MIN_SIGNIFICANT_SECONDS = 360  # OpenDota: duration > 6 minutes

# Column widths in the warehouse (migrations/0001_matches.sql).
_U8 = 0xFF
_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_U64 = 0xFFFF_FFFF_FFFF_FFFF

_ITEM_SLOTS = tuple(f"item_{n}" for n in range(6))
_PLAYER_SLOTS = frozenset((0, 1, 2, 3, 4, 128, 129, 130, 131, 132))
_TRUE = frozenset((True, 1, "1", "true", "True", "TRUE"))
_FALSE = frozenset((False, 0, "0", "false", "False", "FALSE"))


def _invalid(detail: str) -> UnusableMatch:
    return UnusableMatch(RejectReason.INVALID_VALUE, detail)


def _int(raw: Mapping[str, Any], name: str, *, required: bool = True) -> int | None:
    """An integer field: JSON ints, or digit strings from CSV. None when absent and optional."""
    value = raw.get(name)
    if type(value) is int:  # the common case, checked first: this runs ~40 times per match
        return value
    if value is None or value == "":
        if required:
            raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
        return None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    elif isinstance(value, float) and value.is_integer():
        return int(value)  # some JSON writers emit 7.0 for 7
    # bool is an int subclass but never a count or an id in these formats.
    raise _invalid(f"{name}={value!r} is not an integer")


def _in_range(value: int, name: str, high: int, low: int = 0) -> int:
    if not low <= value <= high:
        raise _invalid(f"{name}={value} is outside {low}..{high}")
    return value


def _optional_in_range(value: int | None, name: str, high: int) -> int | None:
    return None if value is None else _in_range(value, name, high)


def _field(raw: Mapping[str, Any], name: str, high: int) -> int | None:
    """An optional non-negative integer that must fit a warehouse column of maximum `high`."""
    value = raw.get(name)
    if type(value) is int and 0 <= value <= high:  # the hot path: ~10 per player
        return value
    return _optional_in_range(_int(raw, name, required=False), name, high)


def _match_id(raw: Mapping[str, Any]) -> int:
    match_id = _int(raw, "match_id")
    assert match_id is not None
    return _in_range(match_id, "match_id", UCI_ID_NAMESPACE - 1, low=1)


def _bool(raw: Mapping[str, Any], name: str) -> bool:
    value = raw.get(name)
    if value is None or value == "":
        raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")
    try:
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
    except TypeError:  # unhashable, e.g. a list
        pass
    raise _invalid(f"{name}={value!r} is not a boolean")


def _patch(constants: DotaConstants, start_time: int | None, default: str | None) -> str | None:
    if start_time is None:
        return default
    patch = constants.patch_at(start_time)
    return patch.name if patch is not None else default


def _check_heroes(groups: Iterable[tuple[str, Iterable[int]]], constants: DotaConstants) -> None:
    """Every hero exists and none appears twice in the match (each group names its field)."""
    known = constants.heroes
    seen: set[int] = set()
    for where, heroes in groups:
        for hero in heroes:
            if hero not in known:
                raise UnusableMatch(
                    RejectReason.UNKNOWN_HERO, f"{where}: hero_id={hero} is not a known hero"
                )
            if hero in seen:
                raise _invalid(f"{where}: hero_id={hero} is picked twice")
            seen.add(hero)


def _players_from_api(raw: Mapping[str, Any], constants: DotaConstants) -> tuple[PlayerRow, ...]:
    raw_players = raw.get("players")
    if not isinstance(raw_players, list):
        raise UnusableMatch(RejectReason.MISSING_FIELD, "players is missing")
    human_players = raw.get("human_players")
    has_bots = type(human_players) is int and human_players < len(raw_players)
    players: list[PlayerRow] = []
    heroes: list[int] = []
    slots: set[int] = set()
    radiant = 0
    for index, raw_player in enumerate(raw_players):
        if type(raw_player) is not dict and not isinstance(raw_player, Mapping):
            raise _invalid(f"players[{index}]={raw_player!r} is not an object")
        hero_id = _int(raw_player, "hero_id")
        assert hero_id is not None
        if hero_id == 0:
            continue  # an empty slot (nobody picked): makes the match incomplete
        slot = _int(raw_player, "player_slot")
        assert slot is not None
        if slot not in _PLAYER_SLOTS:
            raise _invalid(f"player_slot={slot} is not 0-4 or 128-132")
        if slot in slots:
            raise _invalid(f"player_slot={slot} is used twice")
        slots.add(slot)
        # Heroes are checked before bots are left out: a hero twice is invalid whoever played it.
        heroes.append(hero_id)
        if has_bots and "account_id" not in raw_player:
            continue
        team = raw_player.get("team_number")  # newer Steam data states the team outright
        if type(team) is int and team in (0, 1):
            side = Side.RADIANT if team == 0 else Side.DIRE
        else:
            side = Side.of_player_slot(slot)
        radiant += side is Side.RADIANT
        players.append(_player(raw_player, hero_id, side, slot))
    hero_set = set(heroes)
    if len(hero_set) != len(heroes) or not constants.heroes.keys() >= hero_set:
        _check_heroes((("players", heroes),), constants)
    if radiant > TEAM_SIZE or len(players) - radiant > TEAM_SIZE:
        raise _invalid(
            f"players: radiant has {radiant} and dire {len(players) - radiant} heroes, "
            f"at most {TEAM_SIZE} each"
        )
    if any(player.lane_role for player in players):  # parsed: OpenDota's replay parser ran
        _assign_positions(players, raw_players)
    return tuple(players)


def _assign_positions(players: list[PlayerRow], raw_players: list[Any]) -> None:
    """Set `position` of each team's players from their laning (see services/etl/lanes.py)."""
    raw_by_slot = {
        raw["player_slot"]: raw
        for raw in raw_players
        if isinstance(raw, Mapping) and type(raw.get("player_slot")) is int
    }
    for side in (Side.RADIANT, Side.DIRE):
        team = [player for player in players if player.side is side]
        laners = []
        for player in team:
            raw = raw_by_slot.get(player.player_slot, {})
            last_hits = raw.get("last_hits")
            laners.append(
                Laner(
                    lane_role=player.lane_role,
                    is_roaming=raw.get("is_roaming") is True,
                    last_hits=last_hits if type(last_hits) is int else None,
                    gold_per_min=player.gold_per_min,
                )
            )
        positions = team_positions(laners)
        if positions is not None:
            for player, position in zip(team, positions, strict=True):
                player.position = position


def _player(raw_player: Mapping[str, Any], hero_id: int, side: Side, slot: int) -> PlayerRow:
    """One player's row. Each statistic is read inline with a fast path for an in-range int:
    this runs ten times per match, and a helper call per field cost a third of the transform."""
    get = raw_player.get
    account = get("account_id")
    if type(account) is not int or not 0 <= account < ANONYMOUS_ACCOUNT:
        account = _int(raw_player, "account_id", required=False)
        if account == ANONYMOUS_ACCOUNT:
            account = None
        _optional_in_range(account, "account_id", _U32)
    items = [item for item in map(get, _ITEM_SLOTS) if type(item) is int and item > 0]
    if items and max(items) > _U16:
        raise _invalid(f"item id {max(items)} is outside 1..{_U16}")
    lane_role, kills, deaths, assists = (
        get("lane_role"),
        get("kills"),
        get("deaths"),
        get("assists"),
    )
    gold, xp, leaver = get("gold_per_min"), get("xp_per_min"), get("leaver_status")
    return PlayerRow(
        hero_id,
        side,
        slot,
        account,
        None,
        lane_role
        if lane_role is None or (type(lane_role) is int and 0 <= lane_role <= _U8)
        else _field(raw_player, "lane_role", _U8),
        kills if type(kills) is int and 0 <= kills <= _U16 else _field(raw_player, "kills", _U16),
        deaths
        if type(deaths) is int and 0 <= deaths <= _U16
        else _field(raw_player, "deaths", _U16),
        assists
        if type(assists) is int and 0 <= assists <= _U16
        else _field(raw_player, "assists", _U16),
        gold
        if type(gold) is int and 0 <= gold <= _U16
        else _field(raw_player, "gold_per_min", _U16),
        xp if type(xp) is int and 0 <= xp <= _U16 else _field(raw_player, "xp_per_min", _U16),
        tuple(items),
        leaver
        if type(leaver) is int and 0 <= leaver <= _U8
        else _field(raw_player, "leaver_status", _U8),
    )


def _check_draft(
    steps: Sequence[PickBanRow], players: Sequence[PlayerRow], constants: DotaConstants
) -> tuple[PickBanRow, ...]:
    """Draft steps in order; rejects unknown heroes, a repeated order, and a pick credited to
    the side that did not play the hero. Bans are not compared with the players: a Ranked All
    Pick ban nomination may fail its roll and the hero be played after all."""
    known = constants.heroes
    side_of = {p.hero_id: p.side for p in players}
    orders: set[int] = set()
    for step in steps:
        if step.hero_id not in known:
            raise UnusableMatch(
                RejectReason.UNKNOWN_HERO,
                f"picks_bans: hero_id={step.hero_id} is not a known hero",
            )
        if step.order in orders:
            raise _invalid(f"picks_bans: order={step.order} appears twice")
        orders.add(step.order)
        if step.is_pick and side_of.get(step.hero_id, step.side) is not step.side:
            raise _invalid(
                f"picks_bans: order={step.order} picks hero_id={step.hero_id} for "
                f"{step.side.value}, but the other side played it"
            )
    return tuple(sorted(steps, key=lambda step: step.order))


def _side_code(value: Any, where: str) -> Side:
    if type(value) is not bool:
        if value in (0, "0"):
            return Side.RADIANT
        if value in (1, "1"):
            return Side.DIRE
    raise _invalid(f"{where} team={value!r} is not 0 (radiant) or 1 (dire)")


def _api_picks_bans(raw: Mapping[str, Any]) -> list[PickBanRow]:
    steps = raw.get("picks_bans")
    if not isinstance(steps, list):
        return []  # absent or null: not a drafted mode, or not recorded
    rows = []
    radiant, dire = Side.RADIANT, Side.DIRE
    for index, step in enumerate(steps):
        # Fast path for the well-formed step (24 per captain's-mode match).
        if type(step) is dict:
            hero_id, order, is_pick, team = (
                step.get("hero_id"),
                step.get("order"),
                step.get("is_pick"),
                step.get("team"),
            )
            if (
                type(hero_id) is int
                and hero_id > 0
                and type(order) is int
                and 0 <= order <= _U8
                and type(is_pick) is bool
                and type(team) is int
                and team in (0, 1)
            ):
                rows.append(PickBanRow(order, is_pick, radiant if team == 0 else dire, hero_id))
                continue
        row = _api_step(step, index)
        if row is not None:
            rows.append(row)
    return rows


def _api_step(step: Any, index: int) -> PickBanRow | None:
    """One picks_bans entry that missed the fast path: convert it or say what is wrong."""
    if not isinstance(step, Mapping):
        raise _invalid(f"picks_bans[{index}]={step!r} is not an object")
    hero_id = _int(step, "hero_id")
    assert hero_id is not None
    if hero_id == 0:
        return None  # a lost ban (the captain ran out of time) names no hero
    order = _optional_in_range(_int(step, "order", required=False), "picks_bans order", _U8)
    return PickBanRow(
        order=index if order is None else order,
        is_pick=_bool(step, "is_pick"),
        side=_side_code(step.get("team"), f"picks_bans[{index}]"),
        hero_id=hero_id,
    )


def _from_api_match(
    raw: Mapping[str, Any],
    source: MatchSource,
    constants: DotaConstants,
    default_patch: str | None,
) -> CleanMatch:
    match_id = _match_id(raw)
    start_time = _field(raw, "start_time", _U32)
    duration = _field(raw, "duration", _U32)
    game_mode = _int(raw, "game_mode", required=False)
    lobby_type = _int(raw, "lobby_type", required=False)
    try:
        players = _players_from_api(raw, constants)
        picks_bans = _check_draft(_api_picks_bans(raw), players, constants)
    except UnusableMatch as unusable:
        # A missing field is a broken record (or a changed format) whatever the match was.
        if unusable.reason is RejectReason.MISSING_FIELD:
            raise
        reason = _rule_skip(game_mode, lobby_type, duration, constants) or _short_handed(raw)
        if reason is None:
            raise
        raise InsignificantMatch(reason, unusable.detail) from None
    return CleanMatch(
        match_id=match_id,
        radiant_win=_bool(raw, "radiant_win"),
        source=source,
        players=players,
        start_time=start_time,
        match_seq_num=_field(raw, "match_seq_num", _U64),
        duration_seconds=duration,
        patch=_patch(constants, start_time, default_patch),
        game_mode=game_mode,
        lobby_type=lobby_type,
        cluster=_field(raw, "cluster", _U16),
        region=_field(raw, "region", _U16),
        avg_rank_tier=_field(raw, "avg_rank_tier", _U8),
        picks_bans=picks_bans,
    )


def _short_handed(raw: Mapping[str, Any]) -> SkipReason | None:
    """INCOMPLETE when the document itself says fewer than 10 humans played (`human_players`,
    or fewer than 10 slots with a hero), read without trusting the player entries."""
    players = raw.get("players")
    if not isinstance(players, list):
        return None
    humans = raw.get("human_players")
    filled = sum(
        1
        for player in players
        if isinstance(player, Mapping) and player.get("hero_id") not in (0, None)
    )
    if (type(humans) is int and humans < PLAYERS_PER_MATCH) or filled < PLAYERS_PER_MATCH:
        return SkipReason.INCOMPLETE
    return None


def from_steam_match(
    raw: Mapping[str, Any],
    source: MatchSource = MatchSource.STEAM_SEQUENCE,
    constants: DotaConstants | None = None,
    *,
    default_patch: str | None = None,
) -> CleanMatch:
    """A Steam GetMatchDetails `result` or one GetMatchHistoryBySequenceNum match."""
    return _from_api_match(raw, source, constants or load_constants(), default_patch)


def from_opendota_match(
    raw: Mapping[str, Any],
    constants: DotaConstants | None = None,
    *,
    source: MatchSource = MatchSource.OPENDOTA_MATCH,
    default_patch: str | None = None,
) -> CleanMatch:
    """An OpenDota GET /api/matches/{id} object.

    avg_rank_tier is taken only from a match-level field. OpenDota's per-player rank_tier is the
    player's rank when OpenDota last looked, not at match time (a 2015 match in the samples shows
    today's Immortal ranks), so it is not averaged into the match's skill.
    """
    return _from_api_match(raw, source, constants or load_constants(), default_patch)


def _list_hero(part: Any) -> int:
    # int() would quietly truncate 1.5 or accept True: only ints and digit strings pass.
    if isinstance(part, str):
        return int(part)
    raise ValueError(part)


def _hero_list(value: Any, name: str) -> list[int]:
    """Hero ids from "1 2 3" (CSV), "1,2,3" (publicMatches in 2018) or [1, 2, 3] (today)."""
    try:
        if isinstance(value, str):
            return [int(part) for part in value.replace(",", " ").split()]
        if isinstance(value, list):
            return [part if type(part) is int else _list_hero(part) for part in value]
    except ValueError:
        raise _invalid(f"{name}={value!r} is not a list of hero ids") from None
    raise UnusableMatch(RejectReason.MISSING_FIELD, f"{name} is missing")


def _draft_players(
    radiant: Sequence[int],
    dire: Sequence[int],
    constants: DotaConstants,
    names: tuple[str, str] = ("radiant_team", "dire_team"),
) -> tuple[PlayerRow, ...]:
    """Ten players known only by side and hero, in slots 0-4 / 128-132 in the listed order."""
    if len(radiant) != TEAM_SIZE or len(dire) != TEAM_SIZE:
        raise _invalid(
            f"{names[0]}={' '.join(map(str, radiant))!r}, {names[1]}="
            f"{' '.join(map(str, dire))!r}: teams have {len(radiant)} and {len(dire)} heroes, "
            f"expected {TEAM_SIZE} and {TEAM_SIZE}"
        )
    heroes = {*radiant, *dire}
    # Two set operations in C for the common all-valid case; the slow path finds the culprit.
    if len(heroes) != PLAYERS_PER_MATCH or not constants.heroes.keys() >= heroes:
        _check_heroes(((names[0], radiant), (names[1], dire)), constants)
    rows = _draft_rows(constants)
    # Spelled out: a generator here costs a tenth of the whole transform.
    return (
        rows[0][radiant[0]],
        rows[1][radiant[1]],
        rows[2][radiant[2]],
        rows[3][radiant[3]],
        rows[4][radiant[4]],
        rows[5][dire[0]],
        rows[6][dire[1]],
        rows[7][dire[2]],
        rows[8][dire[3]],
        rows[9][dire[4]],
    )


_DRAFT_SLOTS = (
    (Side.RADIANT, 0),
    (Side.RADIANT, 1),
    (Side.RADIANT, 2),
    (Side.RADIANT, 3),
    (Side.RADIANT, 4),
    (Side.DIRE, 128),
    (Side.DIRE, 129),
    (Side.DIRE, 130),
    (Side.DIRE, 131),
    (Side.DIRE, 132),
)
_draft_row_tables: dict[int, tuple[DotaConstants, tuple[dict[int, PlayerRow], ...]]] = {}


def _draft_rows(constants: DotaConstants) -> tuple[dict[int, PlayerRow], ...]:
    """Per draft slot, the row of every known hero in it.

    A draft-only player is fully described by (hero, slot), so the ~1,300 possible rows are
    built once and shared: building ten rows per match was a third of the draft transform.
    Shared rows are why PlayerRow must never be mutated.
    """
    entry = _draft_row_tables.get(id(constants))
    if entry is None or entry[0] is not constants:
        tables = tuple(
            {hero: PlayerRow(hero, side, slot) for hero in constants.heroes}
            for side, slot in _DRAFT_SLOTS
        )
        # The constants object is kept in the entry so its id cannot be reused by another.
        entry = _draft_row_tables[id(constants)] = (constants, tables)
    return entry[1]


def from_draft(
    match_id: int,
    radiant_win: bool,
    radiant: Sequence[int],
    dire: Sequence[int],
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
    try:
        players = _draft_players(radiant, dire, constants)
    except UnusableMatch as unusable:
        reason = _rule_skip(game_mode, lobby_type, duration_seconds, constants)
        if reason is None:
            raise
        raise InsignificantMatch(reason, unusable.detail) from None
    return CleanMatch(
        match_id=_in_range(match_id, "match_id", UCI_ID_NAMESPACE - 1, low=1),
        radiant_win=radiant_win,
        source=source,
        players=players,
        start_time=_optional_in_range(start_time, "start_time", _U32),
        match_seq_num=_optional_in_range(match_seq_num, "match_seq_num", _U64),
        duration_seconds=_optional_in_range(duration_seconds, "duration", _U32),
        patch=_patch(constants, start_time, default_patch),
        game_mode=game_mode,
        lobby_type=lobby_type,
        cluster=_optional_in_range(cluster, "cluster", _U16),
        avg_rank_tier=_optional_in_range(avg_rank_tier, "avg_rank_tier", _U8),
    )


def from_public_match(
    row: Mapping[str, Any],
    *,
    default_patch: str | None = None,
    source: MatchSource = MatchSource.OPENDOTA_PUBLIC_MATCHES,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """An OpenDota /api/publicMatches row (int arrays, or comma strings as recorded in 2018) or a
    CSV row of that shape (space-separated hero ids). Players get side and hero only."""
    return from_draft(
        _match_id(row),
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


def _trackdota_steps(value: Any) -> list[PickBanRow]:
    steps = []
    for part in str(value or "").split(";"):
        if not part:
            continue
        fields = part.split(":")
        if len(fields) != 4 or fields[2] not in ("P", "B"):
            raise _invalid(f"picks_bans step {part!r} is not order:team:P|B:hero_id")
        order, team, kind, hero = fields
        try:
            order_number, hero_id = int(order), int(hero)
        except ValueError:
            raise _invalid(f"picks_bans step {part!r} is not order:team:P|B:hero_id") from None
        steps.append(
            PickBanRow(
                order=_in_range(order_number, "picks_bans order", _U8),
                is_pick=kind == "P",
                side=_side_code(team, f"picks_bans step {part!r}"),
                hero_id=hero_id,
            )
        )
    return steps


def from_trackdota_row(
    row: Mapping[str, Any],
    *,
    default_patch: str | None = None,
    source: MatchSource = MatchSource.IMPORT,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """A trackdota pro match (2018-2019): teams in pick order and the captain's-mode draft
    (`order:team:P|B:hero_id;...`, team 0 = Radiant).

    The source has no start time, game mode or lobby type: patch is `default_patch` (None from
    the dump reader, since the set spans 7.15-7.22) and mode and lobby stay None rather than
    being inferred. Some rows carry only bans, or no draft at all; they are kept as given.
    """
    constants = constants or load_constants()
    match_id = _match_id(row)
    players = _draft_players(
        _hero_list(row.get("radiant_team"), "radiant_team"),
        _hero_list(row.get("dire_team"), "dire_team"),
        constants,
    )
    return CleanMatch(
        match_id=match_id,
        radiant_win=_bool(row, "radiant_win"),
        source=source,
        players=players,
        duration_seconds=_field(row, "duration", _U32),
        patch=default_patch,
        picks_bans=_check_draft(_trackdota_steps(row.get("picks_bans")), players, constants),
    )


def from_uci_row(
    row: Mapping[str, Any],
    *,
    default_patch: str | None = None,
    source: MatchSource = MatchSource.IMPORT,
    constants: DotaConstants | None = None,
) -> CleanMatch:
    """A UCI 2016 row: a synthetic id UCI_ID_NAMESPACE | row_id, team 1 = Radiant, start time
    2016-08-13 (patch 6.88). Its game_mode/game_type columns are the donor's own codes, not
    Valve's, so game mode and lobby type stay None."""
    constants = constants or load_constants()
    row_id = _int(row, "row_id")
    assert row_id is not None
    return CleanMatch(
        match_id=UCI_ID_NAMESPACE | _in_range(row_id, "row_id", UCI_ID_NAMESPACE - 1, low=1),
        radiant_win=_bool(row, "team1_win"),
        source=source,
        players=_draft_players(
            _hero_list(row.get("team1_heroes"), "team1_heroes"),
            _hero_list(row.get("team2_heroes"), "team2_heroes"),
            constants,
            ("team1_heroes", "team2_heroes"),
        ),
        start_time=UCI_START_TIME,
        patch=_patch(constants, UCI_START_TIME, default_patch),
        cluster=_field(row, "cluster_id", _U16),
    )


def skip_reason(match: CleanMatch, constants: DotaConstants | None = None) -> SkipReason | None:
    """Why this match is not significant (OpenDota's rule), or None when it is.

    Significant: a balanced game mode (Turbo is not) and lobby type, duration > 360 s, no player
    who abandoned (leaver_status > 1), and 10 human players with heroes, 5 a side. A check whose
    field the source does not carry (None) is not applied: the draft-only data sets have no
    leaver status, UCI and trackdota no game mode or lobby type.
    """
    reason = _rule_skip(
        match.game_mode, match.lobby_type, match.duration_seconds, constants or load_constants()
    )
    if reason is not None:
        return reason
    players = match.players
    for player in players:
        if player.leaver_status is not None and player.leaver_status > 1:
            return SkipReason.ABANDONED
    if (
        len(players) != PLAYERS_PER_MATCH
        or sum(player.side is Side.RADIANT for player in players) != TEAM_SIZE
    ):
        return SkipReason.INCOMPLETE
    return None


def _rule_skip(
    game_mode: int | None,
    lobby_type: int | None,
    duration_seconds: int | None,
    constants: DotaConstants,
) -> SkipReason | None:
    """The part of the significance rule that needs no player: mode, lobby and duration."""
    if game_mode is not None and game_mode not in constants.balanced_game_modes:
        return SkipReason.UNSUPPORTED_GAME_MODE
    if lobby_type is not None and lobby_type not in constants.balanced_lobby_types:
        return SkipReason.UNSUPPORTED_LOBBY_TYPE
    if duration_seconds is not None and duration_seconds <= MIN_SIGNIFICANT_SECONDS:
        return SkipReason.TOO_SHORT
    return None
