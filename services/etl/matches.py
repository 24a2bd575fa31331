"""The clean match model etl loads into the warehouse, and why a match is skipped or rejected.

Plain dataclasses: no protobuf, no storage types. `transform.py` builds them from every source
format; `repo.py` writes them; `pipeline.py` and the import command move them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from services.common.dota import Side


class MatchSource(StrEnum):
    """Where a match came from (mirrors counterpick.events.v1.MatchSource)."""

    STEAM_SEQUENCE = "steam_sequence"
    OPENDOTA_PUBLIC_MATCHES = "opendota_public_matches"
    OPENDOTA_PARSED_MATCHES = "opendota_parsed_matches"
    OPENDOTA_MATCH = "opendota_match"
    BACKFILL = "backfill"
    IMPORT = "import"


class SkipReason(StrEnum):
    """Why a valid match is deliberately not loaded (counted, never dead-lettered).

    Mirrors counterpick.etl.v1.SkipReason; the rule is OpenDota's "significant" match.
    """

    UNSUPPORTED_GAME_MODE = "unsupported_game_mode"
    UNSUPPORTED_LOBBY_TYPE = "unsupported_lobby_type"
    ABANDONED = "abandoned"
    TOO_SHORT = "too_short"
    INCOMPLETE = "incomplete"
    ALREADY_LOADED = "already_loaded"


class RejectReason(StrEnum):
    """Why a record cannot be turned into a match at all (it goes to the dead-letter topic).

    Mirrors counterpick.events.v1.DeadLetterReason.
    """

    MALFORMED_MESSAGE = "malformed_message"
    MISSING_FIELD = "missing_field"
    UNKNOWN_HERO = "unknown_hero"
    INVALID_VALUE = "invalid_value"
    FETCH_FAILED = "fetch_failed"
    NOT_FOUND_UPSTREAM = "not_found_upstream"


class UnusableMatch(Exception):
    """A record that is not a valid match: the reason and a human-readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class InsignificantMatch(Exception):
    """A record that would be skipped whatever its players hold: the fields that decide
    significance (game mode, lobby type, duration, human players) already rule it out, so a
    flaw further in (a hero twice among bots, say) makes it a skip, not a dead letter."""

    def __init__(self, reason: SkipReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ per field, which cost
# more than the rest of the transform at tens of thousands of matches per second. Treat rows as
# immutable all the same.
@dataclass(slots=True)
class PlayerRow:
    """One player of a match. Stats are None when the source does not carry them."""

    hero_id: int
    side: Side
    player_slot: int
    account_id: int | None = None  # None = anonymous (Steam's 4294967295) or unknown
    position: int | None = None  # 1..5 when known
    lane_role: int | None = None
    kills: int | None = None
    deaths: int | None = None
    assists: int | None = None
    gold_per_min: int | None = None
    xp_per_min: int | None = None
    items: tuple[int, ...] = ()
    leaver_status: int | None = None


@dataclass(slots=True)
class PickBanRow:
    """One step of the draft, in order."""

    order: int
    is_pick: bool
    side: Side
    hero_id: int


@dataclass(slots=True)
class CleanMatch:
    """A match ready for the warehouse."""

    match_id: int
    radiant_win: bool
    source: MatchSource
    players: tuple[PlayerRow, ...]
    start_time: int | None = None  # unix seconds
    match_seq_num: int | None = None
    duration_seconds: int | None = None
    patch: str | None = None  # e.g. "7.41", from start_time and dotaconstants' patch list
    game_mode: int | None = None
    lobby_type: int | None = None
    cluster: int | None = None
    region: int | None = None
    avg_rank_tier: int | None = None  # tens digit = medal 1..8, units = stars
    picks_bans: tuple[PickBanRow, ...] = field(default_factory=tuple)

    def heroes(self, side: Side) -> tuple[int, ...]:
        """Hero ids of one side."""
        return tuple(p.hero_id for p in self.players if p.side is side)
