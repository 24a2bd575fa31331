"""The draft rules (services/draft/rules.py) and the mode table they run on (modes.json).

Pure domain tests: states in, states and events out; time is passed in, never read.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from services.common.dota import TEAM_SIZE, Side
from services.common.dota_constants import load_constants
from services.common.errors import CounterpickError
from services.draft.errors import (
    DraftCompleted,
    DraftExpired,
    DuplicateHero,
    OutOfTurn,
    UnknownHero,
    UnknownPatch,
    VersionMismatch,
    WrongKind,
)
from services.draft.modes import ActionKind, DraftMode, Seat, load_table, rules_for
from services.draft.rules import (
    DRAFT_LIFETIME,
    Action,
    ActionApplied,
    BanSkipped,
    DraftFinished,
    DraftState,
    apply,
    apply_timeout,
    clock,
    create_draft,
    due_timeout,
)

CONSTANTS = load_constants()
POSITIONS = CONSTANTS.patch_positions()
CURRENT_PATCH = CONSTANTS.patches[-1].name
T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
BAN, PICK = ActionKind.BAN, ActionKind.PICK

# The orders as the cited sources write them (services/draft/modes.json), phase by phase; upper
# case bans, lower case picks, F/f the first-pick team.
CM_7_40 = "FFSSFSS" + "fs" + "FFS" + "sffssf" + "FSFS" + "fs"
CM_7_34 = "FSSFSSF" + "fs" + "FFS" + "sffssf" + "FSSF" + "fs"
CM_7_30 = "FSFS" + "fssf" + "FSFSFS" + "sffs" + "FSFS" + "fs"
ALL_PICK = "fssffssffs"


def _draft(
    mode: DraftMode = DraftMode.CAPTAINS_MODE,
    patch: str = CURRENT_PATCH,
    first_pick: Side = Side.RADIANT,
) -> DraftState:
    return create_draft(
        draft_id="d1",
        mode=mode,
        patch=patch,
        first_pick=first_pick,
        created_at=T0,
        seed=7,
        constants=CONSTANTS,
    )


def _letters(state: DraftState) -> str:
    return "".join(
        step.seat.value if step.kind is BAN else step.seat.value.lower()
        for step in state.rules.steps
    )


def _side(state: DraftState, letter: str) -> Side:
    return state.side_of(Seat(letter.upper()))


def _play(state: DraftState, count: int, step_seconds: float = 1.0) -> DraftState:
    """Make the next `count` steps legally, `step_seconds` apart, with the lowest free hero."""
    for _ in range(count):
        turn = state.next_turn()
        assert turn is not None
        now = state.updated_at + timedelta(seconds=step_seconds)
        state, _ = apply(state, Action(turn.kind, turn.side, state.available()[0]), now)
    return state


# --- the mode table -------------------------------------------------------------------------


def test_every_entry_has_sources_and_a_full_draft() -> None:
    for entry in load_table():
        steps = entry.rules.steps
        assert entry.sources, entry.rules.id
        for seat in Seat:
            picks = [s for s in steps if s.seat is seat and s.kind is PICK]
            assert len(picks) == TEAM_SIZE, entry.rules.id
        if entry.rules.mode is DraftMode.CAPTAINS_MODE:
            assert len(steps) == 24, entry.rules.id
            for seat in Seat:
                assert sum(1 for s in steps if s.seat is seat and s.kind is BAN) == 7


@pytest.mark.parametrize("mode", list(DraftMode))
def test_each_patch_from_7_30_on_has_exactly_one_entry_per_mode(mode: DraftMode) -> None:
    for patch in CONSTANTS.patches[POSITIONS["7.30"] :]:
        assert rules_for(mode, patch.name, POSITIONS).mode is mode


@pytest.mark.parametrize(
    ("patch", "rules_id", "order"),
    [
        ("7.33", "captains_mode/7.30", CM_7_30),
        ("7.34", "captains_mode/7.34", CM_7_34),
        ("7.39", "captains_mode/7.34", CM_7_34),
        ("7.40", "captains_mode/7.40", CM_7_40),
        (CURRENT_PATCH, "captains_mode/7.40", CM_7_40),
    ],
)
def test_the_patch_range_picks_the_entry(patch: str, rules_id: str, order: str) -> None:
    state = _draft(patch=patch)
    assert state.rules.id == rules_id
    assert _letters(state) == order


def test_since_7_34_the_first_ban_phase_is_uneven_and_fast() -> None:
    for patch in ("7.34", CURRENT_PATCH):
        first_phase = _draft(patch=patch).rules.steps[:7]
        assert [s.kind for s in first_phase] == [BAN] * 7
        assert sum(1 for s in first_phase if s.seat is Seat.FIRST) == 3
        assert sum(1 for s in first_phase if s.seat is Seat.SECOND) == 4
        assert {s.seconds for s in first_phase} == {15}


def test_unknown_or_uncovered_patches_are_unknown_patch() -> None:
    with pytest.raises(UnknownPatch) as unknown:
        _draft(patch="6.88z")
    assert unknown.value.reason == "ERROR_REASON_UNKNOWN_PATCH"
    assert unknown.value.metadata["patch"] == "6.88z"
    with pytest.raises(UnknownPatch):
        _draft(patch="7.29")


# --- a whole draft --------------------------------------------------------------------------


@pytest.mark.parametrize("first_pick", list(Side))
def test_full_captains_mode_draft_in_the_cited_order(first_pick: Side) -> None:
    state = _draft(first_pick=first_pick)
    assert state.sequence == 0
    for index, letter in enumerate(CM_7_40):
        turn = state.next_turn()
        assert turn is not None
        assert turn.order == index
        assert turn.side is _side(state, letter)
        assert turn.kind is (BAN if letter.isupper() else PICK)
        hero = state.available()[index % 3]
        at = T0 + timedelta(seconds=index + 1)
        state, events = apply(state, Action(turn.kind, turn.side, hero), at)
        assert state.sequence == index + 1
        applied = events[0]
        assert isinstance(applied, ActionApplied)
        assert (applied.action.order, applied.action.hero_id) == (index, hero)
        assert applied.sequence == index + 1
        assert applied.next_turn == state.next_turn()
    assert state.completed
    assert state.next_turn() is None
    assert isinstance(events[-1], DraftFinished)
    assert events[-1].sequence == 24
    for side in Side:
        assert len(state.picks(side)) == TEAM_SIZE
        assert len(state.bans(side)) == 7
    assert len(state.taken()) == 24
    with pytest.raises(DraftCompleted) as done:
        apply(state, Action(PICK, first_pick, state.available()[0]), T0 + timedelta(minutes=1))
    assert (done.value.status_code_name, done.value.reason) == (
        "FAILED_PRECONDITION",
        "ERROR_REASON_ILLEGAL_DRAFT_ACTION",
    )


def test_all_pick_nominated_bans_then_picks_1_2_2_2_2_1() -> None:
    state = _draft(mode=DraftMode.ALL_PICK_RANKED, first_pick=Side.DIRE)
    first = state.next_turn()
    assert first is not None
    assert (first.kind, first.side) == (PICK, Side.DIRE)
    heroes = iter(state.available())
    at = T0 + timedelta(seconds=1)
    for side in (Side.RADIANT, Side.DIRE, Side.RADIANT, Side.RADIANT, Side.RADIANT, Side.RADIANT):
        state, _ = apply(state, Action(BAN, side, next(heroes)), at)
    assert len(state.bans(Side.RADIANT)) == 5
    assert state.turn_started_at == T0 + timedelta(seconds=15)  # bans leave the pick clock alone
    with pytest.raises(WrongKind):
        apply(state, Action(BAN, Side.RADIANT, next(heroes)), at)
    for index, letter in enumerate(ALL_PICK):
        turn = state.next_turn()
        assert turn is not None
        assert turn.kind is PICK
        assert turn.side is _side(state, letter)
        assert turn.order == 6 + index
        state, _ = apply(state, Action(PICK, turn.side, next(heroes)), at)
        if index == 0:
            with pytest.raises(WrongKind):  # nominations end with the first pick
                apply(state, Action(BAN, Side.RADIANT, next(heroes)), at)
    assert state.completed
    assert state.sequence == 16
    assert [len(state.picks(side)) for side in Side] == [TEAM_SIZE, TEAM_SIZE]


# --- illegal actions ------------------------------------------------------------------------


def test_every_illegal_action_gets_its_error() -> None:
    state = _play(_draft(), 8)  # 7 bans and Radiant's first pick; Dire picks next
    taken_pick = state.picks(Side.RADIANT)[0]
    taken_ban = state.bans(Side.DIRE)[0]
    free = state.available()[0]
    now = state.updated_at + timedelta(seconds=1)
    cases: list[tuple[Action, int | None, type[CounterpickError], str]] = [
        (Action(PICK, Side.RADIANT, free), None, OutOfTurn, "ERROR_REASON_ILLEGAL_DRAFT_ACTION"),
        (Action(BAN, Side.DIRE, free), None, WrongKind, "ERROR_REASON_ILLEGAL_DRAFT_ACTION"),
        (Action(PICK, Side.DIRE, taken_pick), None, DuplicateHero, "ERROR_REASON_DUPLICATE_HERO"),
        (Action(PICK, Side.DIRE, taken_ban), None, DuplicateHero, "ERROR_REASON_DUPLICATE_HERO"),
        (Action(PICK, Side.DIRE, 100_000), None, UnknownHero, "ERROR_REASON_UNKNOWN_HERO"),
        (
            Action(PICK, Side.DIRE, free),
            7,
            VersionMismatch,
            "ERROR_REASON_VERSION_MISMATCH",
        ),
    ]
    for action, expected, error, reason in cases:
        with pytest.raises(error) as raised:
            apply(state, action, now, expected_sequence=expected)
        assert raised.value.reason == reason, error
    assert VersionMismatch.status_code_name == "FAILED_PRECONDITION"
    assert OutOfTurn.status_code_name == "INVALID_ARGUMENT"
    assert DraftExpired.status_code_name == "NOT_FOUND"
    same, _ = apply(state, Action(PICK, Side.DIRE, free), now, expected_sequence=8)
    assert same.sequence == 9


# --- clocks ---------------------------------------------------------------------------------


def test_step_time_runs_first_then_the_reserve() -> None:
    state = _draft()  # Radiant first pick; step 0 is Radiant's 15 s ban
    start = clock(state, T0)
    assert start is not None
    assert (start.side, start.step_left, start.reserve_left) == (
        Side.RADIANT,
        timedelta(seconds=15),
        timedelta(seconds=130),
    )
    assert start.deadline == T0 + timedelta(seconds=145)
    later = clock(state, T0 + timedelta(seconds=20))
    assert later is not None
    assert (later.step_left, later.reserve_left) == (timedelta(0), timedelta(seconds=125))
    state, _ = apply(state, Action(BAN, Side.RADIANT, 1), T0 + timedelta(seconds=20))
    assert state.reserve_used_ms == {Side.RADIANT: 5000, Side.DIRE: 0}
    assert state.turn_started_at == T0 + timedelta(seconds=20)
    # Radiant bans again (FF...): its reserve keeps counting down from 125 s.
    again = clock(state, state.turn_started_at + timedelta(seconds=25))
    assert again is not None
    assert (again.side, again.reserve_left) == (Side.RADIANT, timedelta(seconds=115))
    state, _ = apply(state, Action(BAN, Side.RADIANT, 2), T0 + timedelta(seconds=30))
    assert state.reserve_used_ms == {Side.RADIANT: 5000, Side.DIRE: 0}  # in time: no reserve


def test_a_missed_ban_bans_nothing_and_the_next_clock_starts_at_the_deadline() -> None:
    state = _draft()
    deadline = T0 + timedelta(seconds=145)
    assert due_timeout(state, deadline - timedelta(milliseconds=1)) is None
    timeout = due_timeout(state, deadline)
    assert timeout is not None
    assert (timeout.kind, timeout.side, timeout.hero_id, timeout.at) == (
        BAN,
        Side.RADIANT,
        None,
        deadline,
    )
    after, events = apply_timeout(state, deadline + timedelta(seconds=3))
    assert events == (BanSkipped(0, Side.RADIANT, deadline, 1, after.next_turn()),)
    assert (after.sequence, after.step, after.actions, after.skipped) == (1, 1, (), (0,))
    assert after.reserve_used_ms[Side.RADIANT] == 130_000
    assert after.turn_started_at == deadline
    # Radiant's second ban now has only its 15 s step, no reserve left.
    follow = clock(after, deadline)
    assert follow is not None
    assert follow.deadline == deadline + timedelta(seconds=15)


def test_timeouts_catch_up_in_order() -> None:
    state = _draft()
    first = T0 + timedelta(seconds=145)
    after, events = apply_timeout(state, first + timedelta(seconds=15))
    assert [type(e) for e in events] == [BanSkipped, BanSkipped]
    assert [e.at for e in events if isinstance(e, BanSkipped)] == [
        first,
        first + timedelta(seconds=15),
    ]
    assert after.step == 2
    assert after.sequence == 2


def test_a_missed_pick_is_a_random_available_hero() -> None:
    state = _play(_draft(), 7)  # the 7 bans; Radiant's first pick is due
    deadline = state.updated_at + timedelta(seconds=30 + 130)
    timeout = due_timeout(state, deadline, random.Random(3))
    assert timeout is not None
    assert timeout.kind is PICK
    assert timeout.hero_id in state.available()
    assert timeout.hero_id == random.Random(3).choice(state.available())
    after, events = apply_timeout(state, deadline, random.Random(3))
    applied = events[0]
    assert isinstance(applied, ActionApplied)
    assert applied.action.timed_out
    assert applied.action.hero_id == timeout.hero_id
    assert applied.action.side is Side.RADIANT
    assert applied.action.at == deadline
    assert after.picks(Side.RADIANT) == (timeout.hero_id,)
    assert timeout.hero_id not in after.available()


def test_timeouts_are_idempotent_and_agree_across_replicas() -> None:
    state = _play(_draft(), 7)
    now = state.updated_at + timedelta(minutes=10)  # several picks and bans time out
    once, events = apply_timeout(state, now)
    assert events
    twice, again = apply_timeout(once, now)
    assert (twice, again) == (once, ())
    other_replica, other_events = apply_timeout(state, now)
    assert (other_replica, other_events) == (once, events)
    nothing, none = apply_timeout(state, state.updated_at)
    assert (nothing, none) == (state, ())


def test_an_action_after_the_deadline_meets_the_clock_first() -> None:
    state = _draft()
    late = T0 + timedelta(seconds=146)
    # Radiant's first ban timed out at 145 s; its late ban lands on its second ban (FF...).
    after, events = apply(state, Action(BAN, Side.RADIANT, 5), late)
    assert [type(e) for e in events] == [BanSkipped, ActionApplied]
    assert after.skipped == (0,)
    assert after.bans(Side.RADIANT) == (5,)
    assert after.sequence == 2
    # expected_sequence is checked against the caught-up state: a client that read sequence 0
    # meant step 0, which the clock took, so its ban must not land on step 1.
    with pytest.raises(VersionMismatch) as mismatch:
        apply(state, Action(BAN, Side.RADIANT, 5), late, expected_sequence=0)
    assert (mismatch.value.expected, mismatch.value.actual) == (0, 1)
    # A client that re-read the draft (GetDraft shows the caught-up sequence 1) gets through.
    assert apply(state, Action(BAN, Side.RADIANT, 5), late, expected_sequence=1)[0] == after


# --- expiry ---------------------------------------------------------------------------------


def test_drafts_expire_two_hours_after_the_last_change() -> None:
    done = _play(_draft(), 24)
    assert done.completed
    assert apply_timeout(done, done.updated_at + DRAFT_LIFETIME - timedelta(seconds=1)) == (
        done,
        (),
    )
    with pytest.raises(DraftExpired) as expired:
        apply_timeout(done, done.updated_at + DRAFT_LIFETIME)
    assert expired.value.reason == "ERROR_REASON_NOT_FOUND"
    with pytest.raises(DraftExpired):
        apply(done, Action(PICK, Side.RADIANT, 1), done.updated_at + DRAFT_LIFETIME)
    # An abandoned draft ran out its clocks long ago, so it expired 2 h after the last timeout.
    with pytest.raises(DraftExpired):
        apply(_draft(), Action(BAN, Side.RADIANT, 1), T0 + DRAFT_LIFETIME + timedelta(hours=1))


# --- serialisation --------------------------------------------------------------------------


def test_state_and_events_round_trip_through_json() -> None:
    state = _play(_draft(first_pick=Side.DIRE), 3, step_seconds=20)
    state, skipped = apply_timeout(state, state.updated_at + timedelta(minutes=10))
    state = _play(state, 2)
    assert state.skipped
    assert any(a.timed_out for a in state.actions)
    assert state.reserve_used_ms[Side.RADIANT] > 0
    restored = DraftState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert restored.to_dict() == state.to_dict()
    for event in skipped:
        assert json.loads(json.dumps(event.to_dict()))["sequence"] == event.sequence
