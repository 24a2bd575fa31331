"""The one mapping between the game vocabulary (`services/common/dota.py`) and the API's enums.

Every server and the edge convert skill brackets and sides here, so an enum value added to
`common.proto` is taught to the whole mesh in one place.
"""

from __future__ import annotations

from counterpick.common.v1 import common_pb2
from services.common.dota import Side, SkillBracket

_BRACKET_TO_PROTO: dict[SkillBracket, common_pb2.SkillBracket.ValueType] = {
    SkillBracket.ALL: common_pb2.SKILL_BRACKET_ALL,
    SkillBracket.HERALD_GUARDIAN: common_pb2.SKILL_BRACKET_HERALD_GUARDIAN,
    SkillBracket.CRUSADER_ARCHON: common_pb2.SKILL_BRACKET_CRUSADER_ARCHON,
    SkillBracket.LEGEND_ANCIENT: common_pb2.SKILL_BRACKET_LEGEND_ANCIENT,
    SkillBracket.DIVINE_IMMORTAL: common_pb2.SKILL_BRACKET_DIVINE_IMMORTAL,
}
_BRACKET_FROM_PROTO: dict[int, SkillBracket] = {
    number: bracket for bracket, number in _BRACKET_TO_PROTO.items()
}

_SIDE_TO_PROTO: dict[Side, common_pb2.TeamSide.ValueType] = {
    Side.RADIANT: common_pb2.TEAM_SIDE_RADIANT,
    Side.DIRE: common_pb2.TEAM_SIDE_DIRE,
}
_SIDE_FROM_PROTO: dict[int, Side] = {number: side for side, number in _SIDE_TO_PROTO.items()}


def bracket_to_proto(bracket: SkillBracket | None) -> common_pb2.SkillBracket.ValueType:
    """The enum value of a bracket; UNSPECIFIED for none and for UNKNOWN (no API value)."""
    if bracket is None:
        return common_pb2.SKILL_BRACKET_UNSPECIFIED
    return _BRACKET_TO_PROTO.get(bracket, common_pb2.SKILL_BRACKET_UNSPECIFIED)


def bracket_from_proto(value: int) -> SkillBracket | None:
    """The bracket an enum value names; None for UNSPECIFIED and for values this build does not
    know (callers decide: a request treats None as ALL, a stored preference as "not set")."""
    return _BRACKET_FROM_PROTO.get(value)


def side_to_proto(side: Side | None) -> common_pb2.TeamSide.ValueType:
    """The enum value of a side; UNSPECIFIED for none."""
    return common_pb2.TEAM_SIDE_UNSPECIFIED if side is None else _SIDE_TO_PROTO[side]


def side_from_proto(value: int) -> Side | None:
    """The side an enum value names; None for UNSPECIFIED and unknown values."""
    return _SIDE_FROM_PROTO.get(value)
