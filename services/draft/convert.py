"""The one mapping between the draft's domain values (and its event-log payloads) and protobuf.

The servicer and the suggestions adapter use it; domain modules never import protobuf.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from google.protobuf.duration_pb2 import Duration

from counterpick.common.v1 import common_pb2
from counterpick.draft.v1 import draft_service_pb2 as pb
from services.common.dota import Side
from services.common.dota_proto import bracket_to_proto, side_from_proto, side_to_proto
from services.common.errors import InvalidArgument
from services.common.timestamps import to_timestamp
from services.draft.drafts import clock_payload
from services.draft.modes import ActionKind, DraftMode
from services.draft.rooms import Captain, CreatorSeat, DraftDocument
from services.draft.rules import Action, DraftState, Timers

_MODES: dict[int, DraftMode] = {
    common_pb2.DRAFT_MODE_ALL_PICK_RANKED: DraftMode.ALL_PICK_RANKED,
    common_pb2.DRAFT_MODE_CAPTAINS_MODE: DraftMode.CAPTAINS_MODE,
}
_MODES_TO_PROTO: dict[DraftMode, common_pb2.DraftMode.ValueType] = {
    DraftMode.ALL_PICK_RANKED: common_pb2.DRAFT_MODE_ALL_PICK_RANKED,
    DraftMode.CAPTAINS_MODE: common_pb2.DRAFT_MODE_CAPTAINS_MODE,
}
_KINDS: dict[int, ActionKind] = {
    common_pb2.DRAFT_ACTION_KIND_PICK: ActionKind.PICK,
    common_pb2.DRAFT_ACTION_KIND_BAN: ActionKind.BAN,
}
_KINDS_TO_PROTO: dict[ActionKind, common_pb2.DraftActionKind.ValueType] = {
    ActionKind.PICK: common_pb2.DRAFT_ACTION_KIND_PICK,
    ActionKind.BAN: common_pb2.DRAFT_ACTION_KIND_BAN,
}
# DraftTimers' ranges (draft_service.proto), in seconds.
STEP_TIME_RANGE = (1.0, 600.0)
RESERVE_TIME_RANGE = (0.0, 600.0)


# -- requests --------------------------------------------------------------------------------


def mode_from_proto(value: int) -> DraftMode:
    """The mode of a request; unspecified or unknown is INVALID_ARGUMENT."""
    mode = _MODES.get(value)
    if mode is None:
        raise InvalidArgument("mode must be a known DraftMode", field="mode")
    return mode


def required_side(value: int, field: str) -> Side:
    """A side a request must set."""
    side = side_from_proto(value)
    if side is None:
        raise InvalidArgument(f"{field} must be TEAM_SIDE_RADIANT or TEAM_SIDE_DIRE", field=field)
    return side


def creator_seat_from_proto(value: int, our_side: Side | None) -> CreatorSeat:
    """Which seats the creator takes; OUR_SIDE needs our_side."""
    if value == pb.CREATOR_SEAT_OUR_SIDE:
        if our_side is None:
            raise InvalidArgument("creator_seat OUR_SIDE needs our_side", field="creator_seat")
        return CreatorSeat.OUR_SIDE
    if value in (pb.CREATOR_SEAT_UNSPECIFIED, pb.CREATOR_SEAT_BOTH):
        return CreatorSeat.BOTH
    raise InvalidArgument("creator_seat must be a known CreatorSeat", field="creator_seat")


def _seconds(duration: Duration, field: str, bounds: tuple[float, float]) -> float:
    seconds = duration.ToNanoseconds() / 1e9
    if not bounds[0] <= seconds <= bounds[1]:
        raise InvalidArgument(
            f"{field} must be {bounds[0]:g} to {bounds[1]:g} seconds", field=field
        )
    return seconds


def timers_from_proto(request: pb.CreateDraftRequest) -> Timers | None:
    """The draft's timers: None when unset, the mode's times for an empty message."""
    if not request.HasField("timers"):
        return None
    timers = request.timers
    step = (
        _seconds(timers.step_time, "timers.step_time", STEP_TIME_RANGE)
        if timers.HasField("step_time")
        else None
    )
    reserve = (
        _seconds(timers.reserve_time, "timers.reserve_time", RESERVE_TIME_RANGE)
        if timers.HasField("reserve_time")
        else None
    )
    return Timers(step, reserve)


def kind_from_proto(value: int, field: str = "action.kind") -> ActionKind:
    """A pick or ban a request must set."""
    kind = _KINDS.get(value)
    if kind is None:
        raise InvalidArgument(f"{field} must be PICK or BAN", field=field)
    return kind


def action_from_proto(action: common_pb2.DraftAction, *, field: str = "action") -> Action:
    """The action of a SubmitAction (or MirrorGameDraft) request: kind and side required (the
    hero is checked by the rules)."""
    kind = kind_from_proto(action.kind, f"{field}.kind")
    return Action(kind, required_side(action.side, f"{field}.side"), action.hero_id)


# -- the draft -------------------------------------------------------------------------------


def state_to_proto(state: DraftState) -> common_pb2.DraftState:
    """The picks and bans so far, in the shared DraftState message."""
    return common_pb2.DraftState(
        actions=[
            common_pb2.DraftAction(
                order=a.order,
                kind=_KINDS_TO_PROTO[a.kind],
                side=side_to_proto(a.side),
                hero_id=a.hero_id,
            )
            for a in state.actions
        ]
    )


def _duration_ms(ms: int) -> Duration:
    duration = Duration()
    duration.FromMilliseconds(ms)
    return duration


def _time(text: str | None) -> Any:
    return None if text is None else to_timestamp(datetime.fromisoformat(text))


def clock_to_proto(payload: dict[str, Any] | None) -> pb.DraftClock | None:
    """A clock payload (`drafts.clock_payload`) as DraftClock."""
    if payload is None:
        return None
    return pb.DraftClock(
        side=side_to_proto(Side(payload["side"])),
        step_ends_at=_time(payload["step_ends_at"]),
        deadline=_time(payload["deadline"]),
        radiant_reserve=_duration_ms(int(payload["radiant_reserve_ms"])),
        dire_reserve=_duration_ms(int(payload["dire_reserve_ms"])),
    )


def _expected(payload: dict[str, Any] | None) -> pb.ExpectedAction | None:
    if payload is None:
        return None
    expected = pb.ExpectedAction(
        order=int(payload["order"]),
        kind=_KINDS_TO_PROTO[ActionKind(payload["kind"])],
        side=side_to_proto(Side(payload["side"])),
    )
    if payload.get("deadline"):
        expected.deadline.CopyFrom(_time(payload["deadline"]))
    return expected


def _captain(captain: Captain | None) -> pb.Captain | None:
    if captain is None:
        return None
    message = pb.Captain(user_id=captain.user_id)
    if captain.account_id is not None:
        message.account_id = captain.account_id
    return message


def _timers(timers: Timers | None) -> pb.DraftTimers | None:
    if timers is None:
        return None
    message = pb.DraftTimers()
    if timers.step_seconds is not None:
        message.step_time.FromNanoseconds(round(timers.step_seconds * 1e9))
    if timers.reserve_seconds is not None:
        message.reserve_time.FromNanoseconds(round(timers.reserve_seconds * 1e9))
    return message


def draft_to_proto(document: DraftDocument, now: datetime) -> pb.Draft:
    """The whole draft as the API shows it at `now`."""
    state, room = document.state, document.room
    running = clock_payload(state, now)
    turn = state.next_turn()
    draft = pb.Draft(
        draft_id=state.draft_id,
        mode=_MODES_TO_PROTO[state.rules.mode],
        state=state_to_proto(state),
        completed=state.completed,
        sequence=state.sequence,
        created_at=to_timestamp(state.created_at),
        updated_at=to_timestamp(state.updated_at),
        patch=state.patch,
        bracket=bracket_to_proto(room.bracket),
        first_pick_side=side_to_proto(state.first_pick),
        radiant_captain=_captain(room.captain(Side.RADIANT)),
        dire_captain=_captain(room.captain(Side.DIRE)),
        timers=_timers(room.timers),
        clock=clock_to_proto(running),
        expires_at=to_timestamp(state.expires_at),
        mirror=state.mirror,
    )
    if turn is not None:
        next_turn = turn.to_dict()
        next_turn["deadline"] = None if running is None else running["deadline"]
        draft.next_action.CopyFrom(_expected(next_turn) or pb.ExpectedAction())
    if room.our_side is not None:
        draft.our_side = side_to_proto(room.our_side)
    if room.account_id is not None:
        draft.account_id = room.account_id
    return draft


# -- events ----------------------------------------------------------------------------------


def action_applied_to_proto(payload: dict[str, Any]) -> pb.DraftActionApplied:
    """An action_applied log entry as DraftActionApplied."""
    action = payload["action"]
    return pb.DraftActionApplied(
        action=common_pb2.DraftAction(
            order=int(action["order"]),
            kind=_KINDS_TO_PROTO[ActionKind(action["kind"])],
            side=side_to_proto(Side(action["side"])),
            hero_id=int(action["hero_id"]),
        ),
        sequence=int(payload["sequence"]),
        next_action=_expected(payload.get("next_turn")),
        applied_at=_time(action["at"]),
        timed_out=bool(action["timed_out"]),
        clock=clock_to_proto(payload.get("clock")),
    )


def suggestions_payload(message: pb.SuggestionsUpdated, sequence: int) -> dict[str, Any]:
    """A suggestions_updated log entry: the message itself, serialized (it is the model's
    answer verbatim, so it is kept as the model shaped it)."""
    return {
        "type": "suggestions_updated",
        "sequence": sequence,
        "message": base64.b64encode(message.SerializeToString()).decode(),
    }


def suggestions_from_payload(payload: dict[str, Any]) -> pb.SuggestionsUpdated:
    """Inverse of `suggestions_payload`."""
    return pb.SuggestionsUpdated.FromString(base64.b64decode(payload["message"]))


def watch_message(payload: dict[str, Any]) -> pb.WatchDraftResponse:
    """A log entry as the WatchDraft message that carries it."""
    sequence = int(payload["sequence"])
    kind = payload["type"]
    if kind == "action_applied":
        return pb.WatchDraftResponse(
            sequence=sequence, action_applied=action_applied_to_proto(payload)
        )
    if kind == "ban_skipped":
        return pb.WatchDraftResponse(
            sequence=sequence,
            ban_skipped=pb.BanSkipped(
                side=side_to_proto(Side(payload["side"])),
                sequence=sequence,
                next_action=_expected(payload.get("next_turn")),
                skipped_at=_time(payload["at"]),
            ),
        )
    if kind == "suggestions_updated":
        return pb.WatchDraftResponse(
            sequence=sequence, suggestions_updated=suggestions_from_payload(payload)
        )
    if kind == "captain_joined":
        captain = _captain(Captain.from_dict(payload))
        return pb.WatchDraftResponse(sequence=sequence, captain_joined=captain)
    if kind == "completed":
        completed = pb.DraftCompleted(
            completed_at=_time(payload["at"]), model_version=payload.get("model_version", "")
        )
        if payload.get("radiant_win_probability") is not None:
            completed.radiant_win_probability = float(payload["radiant_win_probability"])
        return pb.WatchDraftResponse(sequence=sequence, completed=completed)
    raise ValueError(f"unknown draft event type {kind!r}")


def snapshot_message(document: DraftDocument, now: datetime) -> pb.WatchDraftResponse:
    """A WatchDraft snapshot of the whole draft."""
    return pb.WatchDraftResponse(
        sequence=document.state.sequence, snapshot=draft_to_proto(document, now)
    )
