"""Draft rooms and the application layer on a tiny in-memory store: seats, invite codes, who may
act, the compare-and-set retry, timer-less drafts and DraftTimers overrides.

The store here is a throwaway fake for pure logic only; the real one (Redis) is exercised by the
contract and end-to-end tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import load_constants
from services.draft.drafts import Drafts, FinalPrediction, NewDraft
from services.draft.errors import (
    DuplicateHero,
    NotYourAccount,
    NotYourTurn,
    OutOfTurn,
    SeatUnavailable,
    VersionMismatch,
)
from services.draft.modes import ActionKind, DraftMode
from services.draft.rooms import Actor, Captain, CreatorSeat, DraftDocument, hash_code
from services.draft.rules import Action, Timers, clock

CONSTANTS = load_constants()
HEROES = sorted(CONSTANTS.heroes)
T0 = datetime(2026, 6, 1, 12, tzinfo=UTC)
PATCH = "7.41"
ALICE = Actor("alice", account_id=1001)
BOB = Actor("bob", account_id=2002)
EVE = Actor("eve")


@dataclass
class Stored:
    document: dict[str, Any]
    revision: int


class MemoryStore:
    """Compare-and-set on a revision, and a list of events: just enough for the logic."""

    def __init__(self) -> None:
        self.docs: dict[str, Stored] = {}
        self.events: list[tuple[int, dict[str, Any]]] = []
        self.deadlines: dict[str, datetime | None] = {}
        # Called between a load and the commit that follows it, to stage a lost race.
        self.before_commit: list[Any] = []
        # Yield on every load, so that concurrent callers all load before any commits (a race).
        self.racy = False

    async def create(
        self,
        draft_id: str,
        document: dict[str, Any],
        *,
        expires_at: datetime,
        deadline: datetime | None,
        events: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None:
        self.docs[draft_id] = Stored(document, 1)
        self.deadlines[draft_id] = deadline

    async def load(self, draft_id: str) -> Stored | None:
        stored = self.docs.get(draft_id)
        if self.racy:
            await asyncio.sleep(0)
        return stored

    async def commit(
        self,
        draft_id: str,
        *,
        expected_revision: int,
        document: dict[str, Any],
        events: Sequence[tuple[int, dict[str, Any]]],
        expires_at: datetime,
        deadline: datetime | None,
    ) -> bool:
        while self.before_commit:
            await self.before_commit.pop(0)()
        stored = self.docs[draft_id]
        if stored.revision != expected_revision:
            return False
        self.docs[draft_id] = Stored(document, stored.revision + 1)
        self.events.extend(events)
        self.deadlines[draft_id] = deadline
        return True


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def new_draft(
    *,
    seat: CreatorSeat = CreatorSeat.BOTH,
    our_side: Side | None = Side.RADIANT,
    timers: Timers | None = None,
    mode: DraftMode = DraftMode.CAPTAINS_MODE,
) -> NewDraft:
    return NewDraft(
        mode=mode,
        patch=PATCH,
        bracket=SkillBracket.ALL,
        our_side=our_side,
        account_id=1001,
        first_pick=Side.RADIANT,
        seat=seat,
        timers=timers,
    )


def drafts(store: MemoryStore, now: Clock) -> Drafts:
    return Drafts(store, CONSTANTS, now=now)


def ban(side: Side, hero: int) -> Action:
    return Action(ActionKind.BAN, side, hero)


async def test_invite_code_opens_the_other_seat_once_and_only_its_hash_is_stored() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, code = await app.create(ALICE, new_draft(seat=CreatorSeat.OUR_SIDE))
    assert code is not None
    stored = store.docs[document.draft_id].document
    assert code not in str(stored)
    assert stored["room"]["invite_hash"] == hash_code(code)
    assert document.room.captain(Side.DIRE) is None

    with pytest.raises(SeatUnavailable):
        await app.join(BOB, document.draft_id, code + "x", None)
    with pytest.raises(NotYourAccount):
        await app.join(BOB, document.draft_id, code, 1001)
    joined, side = await app.join(BOB, document.draft_id, code, 2002)
    assert side is Side.DIRE
    assert joined.room.captain(Side.DIRE) is not None
    assert store.events[-1][1]["type"] == "captain_joined"
    # The holder joining again changes nothing; anyone else finds the seat taken.
    events = len(store.events)
    again, _ = await app.join(BOB, document.draft_id, code, 2002)
    assert again.room == joined.room
    assert len(store.events) == events
    with pytest.raises(SeatUnavailable):
        await app.join(EVE, document.draft_id, code, None)


async def test_only_the_captain_of_the_side_to_act_may_act_and_admins_for_either() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, code = await app.create(ALICE, new_draft(seat=CreatorSeat.OUR_SIDE))
    assert code is not None
    await app.join(BOB, document.draft_id, code, None)
    draft_id = document.draft_id
    with pytest.raises(NotYourTurn):
        await app.submit(EVE, draft_id, ban(Side.RADIANT, HEROES[0]))
    with pytest.raises(NotYourTurn):  # Radiant bans first: Dire's captain waits
        await app.submit(BOB, draft_id, ban(Side.DIRE, HEROES[0]))
    with pytest.raises(OutOfTurn):  # Radiant's captain, but naming the wrong side
        await app.submit(ALICE, draft_id, ban(Side.DIRE, HEROES[0]))
    first = await app.submit(ALICE, draft_id, ban(Side.RADIANT, HEROES[0]))
    assert first.event["sequence"] == 1
    # 7.40 Captains Mode opens F F S S: Radiant bans again, then an admin may ban for it.
    admin = Actor("root", admin=True)
    second = await app.submit(admin, draft_id, ban(Side.RADIANT, HEROES[1]))
    assert second.document.state.sequence == 2
    third = await app.submit(BOB, draft_id, ban(Side.DIRE, HEROES[2]))
    assert third.document.state.bans(Side.DIRE) == (HEROES[2],)


async def test_a_lost_race_is_rechecked_against_the_draft_that_won() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(ALICE, new_draft())
    draft_id = document.draft_id

    async def rival() -> None:
        await app.submit(ALICE, draft_id, ban(Side.RADIANT, HEROES[0]))

    store.before_commit.append(rival)
    with pytest.raises(DuplicateHero):
        await app.submit(ALICE, draft_id, ban(Side.RADIANT, HEROES[0]))
    store.before_commit.append(rival_with(app, draft_id, HEROES[5]))
    with pytest.raises(VersionMismatch):
        await app.submit(ALICE, draft_id, ban(Side.RADIANT, HEROES[1]), expected_sequence=1)
    # Without expected_sequence an action still legal after the re-check is not carried over to
    # the next step (S S: Dire bans twice in a row): the racer learns it lost the race.
    store.before_commit.append(rival_with(app, draft_id, HEROES[6]))
    with pytest.raises(VersionMismatch) as lost:
        await app.submit(ALICE, draft_id, ban(Side.DIRE, HEROES[7]))
    assert (lost.value.expected, lost.value.actual) == (2, 3)
    done = await app.submit(ALICE, draft_id, ban(Side.DIRE, HEROES[7]))
    assert done.document.state.sequence == 4


async def test_a_double_click_at_a_double_step_bans_one_hero() -> None:
    # Captains Mode 7.40+ opens F F: Radiant bans at steps 0 and 1. Ten racing bans of one
    # captain without expected_sequence must not take both steps.
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(ALICE, new_draft())
    store.racy = True
    outcomes = await asyncio.gather(
        *(app.submit(ALICE, document.draft_id, ban(Side.RADIANT, HEROES[i])) for i in range(10)),
        return_exceptions=True,
    )
    wins = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(wins) == 1
    assert all(isinstance(o, VersionMismatch) for o in outcomes if isinstance(o, BaseException))
    assert (await app.get(document.draft_id))[0].state.sequence == 1


async def test_racing_captains_with_expected_sequence_lose_with_version_mismatch() -> None:
    # Step 1 is Radiant's second ban; once one lands the turn is Dire's, yet a racer that sent
    # expected_sequence 1 lost a race: VERSION_MISMATCH, not PERMISSION_DENIED.
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, code = await app.create(ALICE, new_draft(seat=CreatorSeat.OUR_SIDE))
    assert code is not None
    await app.join(BOB, document.draft_id, code, None)
    await app.submit(ALICE, document.draft_id, ban(Side.RADIANT, HEROES[0]))
    store.racy = True
    outcomes = await asyncio.gather(
        *(
            app.submit(
                ALICE, document.draft_id, ban(Side.RADIANT, HEROES[i + 1]), expected_sequence=1
            )
            for i in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if not isinstance(o, BaseException)) == 1
    assert all(isinstance(o, VersionMismatch) for o in outcomes if isinstance(o, BaseException))
    # Dire's captain, a step behind, also learns the draft moved on before who may act.
    with pytest.raises(VersionMismatch):
        await app.submit(BOB, document.draft_id, ban(Side.DIRE, HEROES[20]), expected_sequence=0)


async def test_an_action_after_the_deadline_with_the_read_sequence_is_a_mismatch() -> None:
    # Radiant's first ban ran out but no sweeper applied it yet: a ban sent with the sequence
    # read before the deadline was meant for step 0 and must not land on step 1.
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(ALICE, new_draft(timers=Timers(1.0, 0.0)))
    now.now = T0 + timedelta(seconds=1.05)
    with pytest.raises(VersionMismatch):
        await app.submit(
            ALICE, document.draft_id, ban(Side.RADIANT, HEROES[5]), expected_sequence=0
        )
    # GetDraft's view shows the caught-up draft, whose sequence works.
    view = await app.view(document.draft_id)
    assert (view.state.sequence, view.state.skipped) == (1, (0,))
    done = await app.submit(
        ALICE, document.draft_id, ban(Side.RADIANT, HEROES[5]), expected_sequence=1
    )
    assert done.event["sequence"] == 2


async def test_the_final_prediction_is_asked_once_and_never_waited_for_long() -> None:
    store, now = MemoryStore(), Clock()
    asked: list[int] = []

    async def slow_model(document: DraftDocument) -> FinalPrediction | None:
        asked.append(document.state.sequence)
        await asyncio.sleep(30)
        return FinalPrediction(0.5, "v")

    app = Drafts(store, CONSTANTS, now=now, predict_final=slow_model, final_prediction_seconds=0.1)
    document, _ = await app.create(ALICE, new_draft())
    state = document.state
    while (turn := state.next_turn()) is not None and state.sequence < 23:
        taken = state.taken()
        hero = next(h for h in HEROES if h not in taken)
        played = await app.submit(ALICE, document.draft_id, Action(turn.kind, turn.side, hero))
        state = played.document.state
    turn = state.next_turn()
    assert turn is not None
    hero = next(h for h in HEROES if h not in state.taken())
    # The last pick loses one race (a sweeper's no-op commit, say): the retry reuses the answer.
    store.before_commit.append(touch(store, document.draft_id))
    started = time.monotonic()
    last = await app.submit(ALICE, document.draft_id, Action(turn.kind, turn.side, hero))
    assert time.monotonic() - started < 1.0
    assert last.document.state.completed
    assert asked == [24]
    completed = [payload for _, payload in store.events if payload["type"] == "completed"]
    assert len(completed) == 1
    assert "radiant_win_probability" not in completed[0]


def touch(store: MemoryStore, draft_id: str) -> Any:
    async def bump() -> None:
        stored = store.docs[draft_id]
        store.docs[draft_id] = Stored(stored.document, stored.revision + 1)

    return bump


async def test_a_captain_joining_again_is_announced_once() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, code = await app.create(ALICE, new_draft(seat=CreatorSeat.OUR_SIDE))
    assert code is not None
    await app.join(BOB, document.draft_id, code, None)
    again, side = await app.join(BOB, document.draft_id, code, 2002)
    assert side is Side.DIRE
    joined = [payload for _, payload in store.events if payload["type"] == "captain_joined"]
    assert len(joined) == 1
    assert again.room.captain(Side.DIRE) == Captain("bob", None)


def rival_with(app: Drafts, draft_id: str, hero: int) -> Any:
    async def rival() -> None:
        state = (await app.get(draft_id))[0].state
        turn = state.next_turn()
        assert turn is not None
        await app.submit(ALICE, draft_id, ban(turn.side, hero))

    return rival


async def test_without_timers_nothing_times_out_and_no_clock_runs() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(ALICE, new_draft(timers=None))
    assert store.deadlines[document.draft_id] is None
    assert clock(document.state, T0) is None
    now.now = T0 + timedelta(minutes=90)
    assert not await app.timeout(document.draft_id)
    assert (await app.get(document.draft_id))[0].state.sequence == 0


async def test_timer_overrides_set_step_and_reserve_and_a_timeout_applies_once() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(
        ALICE, new_draft(timers=Timers(step_seconds=1.0, reserve_seconds=0.5))
    )
    running = clock(document.state, T0)
    assert running is not None
    assert running.deadline == T0 + timedelta(seconds=1.5)
    assert store.deadlines[document.draft_id] == running.deadline
    now.now = T0 + timedelta(seconds=1.6)
    results = await asyncio.gather(*(app.timeout(document.draft_id) for _ in range(5)))
    assert sum(results) == 1
    skipped = [payload for _, payload in store.events if payload["type"] == "ban_skipped"]
    assert len(skipped) == 1
    state = (await app.get(document.draft_id))[0].state
    assert state.sequence == 1
    assert state.reserve_left(Side.RADIANT) == timedelta(0)


async def test_documents_round_trip_through_json() -> None:
    store, now = MemoryStore(), Clock()
    app = drafts(store, now)
    document, _ = await app.create(
        ALICE, new_draft(seat=CreatorSeat.OUR_SIDE, timers=Timers(reserve_seconds=3))
    )
    assert DraftDocument.from_dict(document.to_dict()) == document
