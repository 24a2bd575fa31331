"""The game's vocabulary, one definition each: skill brackets, sides, team size, patch order.

Domain code everywhere (etl, model, user, draft, the edge) speaks these types; nothing here knows
protobuf or storage. `services/common/dota_proto.py` is the one place that maps them to and from
the API's enums. Hero ids, the hero-id range and patch order come from the game constants
(`services/common/dota_constants.py`), since a game update changes them.
"""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Self

# Players per team in every mode counterpick knows.
TEAM_SIZE = 5
PLAYERS_PER_MATCH = 2 * TEAM_SIZE

# Rank tiers: tens digit = medal 1 (Herald) .. 8 (Immortal), units digit = stars.
_MIN_RANK_TIER = 10
_MAX_RANK_TIER = 89


class SkillBracket(StrEnum):
    """A skill bracket, by its stored name.

    ALL means every match, those of unknown rank included; UNKNOWN is where a match whose average
    rank tier is unknown is stored (it is counted in ALL, never asked for on its own).
    """

    ALL = "all"
    HERALD_GUARDIAN = "herald_guardian"
    CRUSADER_ARCHON = "crusader_archon"
    LEGEND_ANCIENT = "legend_ancient"
    DIVINE_IMMORTAL = "divine_immortal"
    UNKNOWN = "unknown"

    @classmethod
    def from_rank_tier(cls, avg_rank_tier: int | None) -> SkillBracket:
        """The bracket of an average rank tier: 10..29 Herald-Guardian, 30..49 Crusader-Archon,
        50..69 Legend-Ancient, 70..89 Divine-Immortal; anything else (or none) is UNKNOWN."""
        if avg_rank_tier is None or not _MIN_RANK_TIER <= avg_rank_tier <= _MAX_RANK_TIER:
            return cls.UNKNOWN
        medal = avg_rank_tier // 10
        return _BY_MEDAL_PAIR[min((medal - 1) // 2, len(_BY_MEDAL_PAIR) - 1)]

    @classmethod
    def parse(cls, name: str) -> SkillBracket | None:
        """The bracket stored as `name`, or None for a name that is no bracket."""
        try:
            return cls(name)
        except ValueError:
            return None

    @classmethod
    def ranked(cls) -> tuple[SkillBracket, ...]:
        """The four brackets of known rank, lowest first."""
        return _BY_MEDAL_PAIR


_BY_MEDAL_PAIR: tuple[SkillBracket, ...] = (
    SkillBracket.HERALD_GUARDIAN,
    SkillBracket.CRUSADER_ARCHON,
    SkillBracket.LEGEND_ANCIENT,
    SkillBracket.DIVINE_IMMORTAL,
)


class Side(Enum):
    """A team. The value is the stored name."""

    RADIANT = "radiant"
    DIRE = "dire"

    @property
    def other(self) -> Side:
        """The opposing team."""
        return Side.DIRE if self is Side.RADIANT else Side.RADIANT

    @classmethod
    def of_player_slot(cls, player_slot: int) -> Self:
        """The side of a Steam/OpenDota player_slot (0..4 Radiant, 128..132 Dire)."""
        return cls(Side.DIRE.value if player_slot >= 128 else Side.RADIANT.value)
