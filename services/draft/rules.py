"""The live-draft rules as pure functions on a plain, serialisable state.

`apply(state, action, now)` and `apply_timeout(state, now)` return a new state and the events to
broadcast, or raise a domain error (`services.draft.errors`) carrying the contract's
ErrorReason. Nothing here does I/O or knows gRPC, protobuf or Redis: the storage adapter keeps
`DraftState.to_dict()` and swaps it atomically when `sequence` is still the one it read.

Clocks are the game's: the side to act first spends the step's time, then its own reserve, which
never refills. When both are spent the step times out: a missed pick becomes a random available
hero and a missed ban bans nothing. A timeout happens at its deadline, not when someone notices it,
and its random hero comes from an RNG seeded by the draft's seed and the step, so every replica
that computes it gets the same result and replaying it changes nothing.

Sequence: every accepted change (an action, or a ban skipped by timeout) adds 1, so it is the
version compare-and-set uses. Without skipped bans it equals the number of actions, as the
contract says; `skipped` lists the steps whose ban timed out.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Self

from services.common.dota import Side
from services.common.dota_constants import DotaConstants
from services.draft.errors import (
    DraftCompleted,
    DraftExpired,
    DuplicateHero,
    MirrorConflict,
    NotAMirror,
    OutOfTurn,
    TooManyPicks,
    UnknownHero,
    VersionMismatch,
    WrongKind,
)
from services.draft.modes import ActionKind, DraftMode, Rules, Seat, Step, rules_for

# A draft is gone this long after its last change (draft_service.proto).
DRAFT_LIFETIME = timedelta(hours=2)
# Every mode ends with five heroes a side; a mirror draft is complete then.
PICKS_PER_SIDE = 5
_MS = timedelta(milliseconds=1)


def _ms(delta: timedelta) -> int:
    return delta // _MS


@dataclass(frozen=True)
class Action:
    """A pick or ban a side submits."""

    kind: ActionKind
    side: Side
    hero_id: int


@dataclass(frozen=True)
class AppliedAction:
    """An action the draft accepted; `order` numbers the actions 0, 1, 2 ... without gaps."""

    order: int
    kind: ActionKind
    side: Side
    hero_id: int
    at: datetime
    timed_out: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "order": self.order,
            "kind": self.kind.value,
            "side": self.side.value,
            "hero_id": self.hero_id,
            "at": self.at.isoformat(),
            "timed_out": self.timed_out,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        return cls(
            order=int(raw["order"]),
            kind=ActionKind(raw["kind"]),
            side=Side(raw["side"]),
            hero_id=int(raw["hero_id"]),
            at=datetime.fromisoformat(raw["at"]),
            timed_out=bool(raw["timed_out"]),
        )


@dataclass(frozen=True)
class Turn:
    """The action a draft expects next (the contract's ExpectedAction)."""

    order: int
    kind: ActionKind
    side: Side

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"order": self.order, "kind": self.kind.value, "side": self.side.value}


@dataclass(frozen=True)
class Timers:
    """A draft's timer settings: None keeps the mode's time (step, reserve)."""

    step_seconds: float | None = None
    reserve_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"step_seconds": self.step_seconds, "reserve_seconds": self.reserve_seconds}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        step, reserve = raw.get("step_seconds"), raw.get("reserve_seconds")
        return cls(
            None if step is None else float(step), None if reserve is None else float(reserve)
        )


MODE_TIMES = Timers()


@dataclass(frozen=True)
class Clock:
    """The running clock of the side to act, at one moment."""

    side: Side
    step_left: timedelta
    reserve_left: timedelta
    deadline: datetime


@dataclass(frozen=True)
class DraftState:
    """A draft: room settings, the rules it runs under, what happened so far and the clocks.

    `first_pick` is a room setting (the side with first pick). `hero_pool` is the set of heroes
    the draft may use, fixed at creation. `step` indexes `rules.steps`: the turn due, or
    `len(rules.steps)` once complete. `turn_started_at` is when the due turn's clock started.
    `reserve_used_ms` is the reserve each side has consumed, in milliseconds.
    """

    draft_id: str
    patch: str
    rules: Rules
    first_pick: Side
    hero_pool: frozenset[int]
    seed: int
    created_at: datetime
    updated_at: datetime
    turn_started_at: datetime
    sequence: int = 0
    step: int = 0
    actions: tuple[AppliedAction, ...] = ()
    skipped: tuple[int, ...] = ()
    reserve_used_ms: Mapping[Side, int] = field(
        default_factory=lambda: {Side.RADIANT: 0, Side.DIRE: 0}
    )
    # False: a draft without timers; nothing ever times out and no clock runs.
    timed: bool = True
    # A mirror of a real game's draft: the game decides the order (`mirror_actions`), the steps
    # of `rules` are not followed, and the next turn is what the game last said (`mirror_turn`:
    # side and kind; Radiant and a ban when it has not said).
    mirror: bool = False
    mirror_turn: tuple[Side, ActionKind] | None = None

    @property
    def reserve_ms(self) -> int:
        """Each side's whole reserve, in milliseconds."""
        return round(self.rules.reserve_seconds * 1000)

    @property
    def completed(self) -> bool:
        """True once the last step is done (a mirror: once both sides have their 5 picks)."""
        if self.mirror:
            return all(len(self.picks(side)) >= PICKS_PER_SIDE for side in Side)
        return self.step >= len(self.rules.steps)

    @property
    def expires_at(self) -> datetime:
        """When the draft is gone: DRAFT_LIFETIME after its last change."""
        return self.updated_at + DRAFT_LIFETIME

    def side_of(self, seat: Seat) -> Side:
        """The side sitting in `seat` of the draft order."""
        return self.first_pick if seat is Seat.FIRST else self.first_pick.other

    def current_step(self) -> Step | None:
        """The step due, or None once complete."""
        return None if self.completed else self.rules.steps[self.step]

    def next_turn(self) -> Turn | None:
        """The action expected next, or None once complete."""
        if self.mirror:
            if self.completed:
                return None
            side, kind = self.mirror_turn or (Side.RADIANT, ActionKind.BAN)
            return Turn(order=len(self.actions), kind=kind, side=side)
        step = self.current_step()
        if step is None:
            return None
        return Turn(order=len(self.actions), kind=step.kind, side=self.side_of(step.seat))

    def taken(self) -> frozenset[int]:
        """Heroes picked or banned by anyone."""
        return frozenset(action.hero_id for action in self.actions)

    def available(self) -> tuple[int, ...]:
        """Heroes still free to pick or ban, by id."""
        return tuple(sorted(self.hero_pool - self.taken()))

    def picks(self, side: Side) -> tuple[int, ...]:
        """The heroes `side` picked, in order."""
        return tuple(
            a.hero_id for a in self.actions if a.side is side and a.kind is ActionKind.PICK
        )

    def bans(self, side: Side) -> tuple[int, ...]:
        """The heroes `side` banned, in order."""
        return tuple(a.hero_id for a in self.actions if a.side is side and a.kind is ActionKind.BAN)

    def reserve_left(self, side: Side) -> timedelta:
        """Reserve `side` has left, not counting the turn running now."""
        return timedelta(seconds=self.rules.reserve_seconds) - self.reserve_used_ms[side] * _MS

    def nominating(self) -> bool:
        """True while ranked All Pick's nominated bans are accepted: no hero picked yet."""
        return self.rules.nominated_bans > 0 and not any(
            a.kind is ActionKind.PICK for a in self.actions
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form; `from_dict` restores an equal state."""
        return {
            "draft_id": self.draft_id,
            "patch": self.patch,
            "rules": self.rules.to_dict(),
            "first_pick": self.first_pick.value,
            "hero_pool": sorted(self.hero_pool),
            "seed": self.seed,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "turn_started_at": self.turn_started_at.isoformat(),
            "sequence": self.sequence,
            "step": self.step,
            "actions": [action.to_dict() for action in self.actions],
            "skipped": list(self.skipped),
            "reserve_used_ms": {side.value: ms for side, ms in self.reserve_used_ms.items()},
            "timed": self.timed,
            "mirror": self.mirror,
            "mirror_turn": (
                None
                if self.mirror_turn is None
                else [self.mirror_turn[0].value, self.mirror_turn[1].value]
            ),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        return cls(
            draft_id=str(raw["draft_id"]),
            patch=str(raw["patch"]),
            rules=Rules.from_dict(raw["rules"]),
            first_pick=Side(raw["first_pick"]),
            hero_pool=frozenset(int(hero) for hero in raw["hero_pool"]),
            seed=int(raw["seed"]),
            created_at=datetime.fromisoformat(raw["created_at"]),
            updated_at=datetime.fromisoformat(raw["updated_at"]),
            turn_started_at=datetime.fromisoformat(raw["turn_started_at"]),
            sequence=int(raw["sequence"]),
            step=int(raw["step"]),
            actions=tuple(AppliedAction.from_dict(a) for a in raw["actions"]),
            skipped=tuple(int(step) for step in raw["skipped"]),
            reserve_used_ms={Side(side): int(ms) for side, ms in raw["reserve_used_ms"].items()},
            timed=bool(raw.get("timed", True)),
            mirror=bool(raw.get("mirror", False)),
            mirror_turn=(
                None
                if raw.get("mirror_turn") is None
                else (Side(raw["mirror_turn"][0]), ActionKind(raw["mirror_turn"][1]))
            ),
        )


@dataclass(frozen=True)
class ActionApplied:
    """An action was applied (by its side, or by the clock when `action.timed_out`)."""

    action: AppliedAction
    sequence: int
    next_turn: Turn | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, tagged with its type."""
        return {
            "type": "action_applied",
            "action": self.action.to_dict(),
            "sequence": self.sequence,
            "next_turn": None if self.next_turn is None else self.next_turn.to_dict(),
        }


@dataclass(frozen=True)
class BanSkipped:
    """A ban's time ran out: nothing is banned and the draft moves on."""

    step: int
    side: Side
    at: datetime
    sequence: int
    next_turn: Turn | None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, tagged with its type."""
        return {
            "type": "ban_skipped",
            "step": self.step,
            "side": self.side.value,
            "at": self.at.isoformat(),
            "sequence": self.sequence,
            "next_turn": None if self.next_turn is None else self.next_turn.to_dict(),
        }


@dataclass(frozen=True)
class DraftFinished:
    """The last step is done; follows the event that did it, with the same sequence."""

    sequence: int
    at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, tagged with its type."""
        return {"type": "completed", "sequence": self.sequence, "at": self.at.isoformat()}


DraftEvent = ActionApplied | BanSkipped | DraftFinished


@dataclass(frozen=True)
class Timeout:
    """What the clock does when the due step runs out: a random pick, or a skipped ban."""

    step: int
    side: Side
    kind: ActionKind
    hero_id: int | None
    at: datetime


def new_draft(
    *,
    draft_id: str,
    rules: Rules,
    patch: str,
    first_pick: Side,
    hero_pool: frozenset[int],
    created_at: datetime,
    seed: int,
    timed: bool = True,
    mirror: bool = False,
) -> DraftState:
    """An empty draft at sequence 0. Ranked All Pick's first pick waits out the nomination."""
    return DraftState(
        timed=timed and not mirror,
        mirror=mirror,
        draft_id=draft_id,
        patch=patch,
        rules=rules,
        first_pick=first_pick,
        hero_pool=hero_pool,
        seed=seed,
        created_at=created_at,
        updated_at=created_at,
        turn_started_at=created_at + timedelta(seconds=rules.nomination_seconds),
    )


def create_draft(
    *,
    draft_id: str,
    mode: DraftMode,
    patch: str,
    first_pick: Side,
    created_at: datetime,
    seed: int,
    constants: DotaConstants,
    timers: Timers | None = MODE_TIMES,
    mirror: bool = False,
) -> DraftState:
    """A new draft for `patch` with the mode's rules for it and every hero the constants know.
    `mirror`: a mirror of a real game's draft (no timers; see `mirror_actions`).

    `timers` None: a draft without timers; else its overrides replace the mode's times (the
    default, MODE_TIMES, keeps them).
    Raises UnknownPatch when the patch is unknown or no rules cover it.
    """
    rules = rules_for(mode, patch, constants.patch_positions())
    if timers is not None:
        rules = rules.with_times(
            step_seconds=timers.step_seconds, reserve_seconds=timers.reserve_seconds
        )
    return new_draft(
        timed=timers is not None,
        draft_id=draft_id,
        rules=rules,
        patch=patch,
        first_pick=first_pick,
        hero_pool=frozenset(constants.heroes),
        created_at=created_at,
        seed=seed,
        mirror=mirror,
    )


def clock(state: DraftState, now: datetime) -> Clock | None:
    """The clock of the side to act at `now`, or None once complete or without timers."""
    step = state.current_step()
    if step is None or not state.timed:
        return None
    side = state.side_of(step.seat)
    step_time = timedelta(seconds=step.seconds)
    elapsed = max(now - state.turn_started_at, timedelta(0))
    reserve = state.reserve_left(side)
    over = max(elapsed - step_time, timedelta(0))
    return Clock(
        side=side,
        step_left=max(step_time - elapsed, timedelta(0)),
        reserve_left=max(reserve - over, timedelta(0)),
        deadline=state.turn_started_at + step_time + reserve,
    )


def _timeout_rng(state: DraftState) -> random.Random:
    # Not for security: the same seed and step give every replica the same "random" hero.
    return random.Random(f"{state.seed}:{state.step}")  # noqa: S311


def due_timeout(
    state: DraftState, now: datetime, rng: random.Random | None = None
) -> Timeout | None:
    """What the clock does to the due step if its time has run out by `now`, else None.

    `rng` replaces the draft's seeded RNG (tests); it draws the random hero of a missed pick.
    """
    running = clock(state, now)
    step = state.current_step()
    if running is None or step is None or now < running.deadline:
        return None
    hero_id = None
    if step.kind is ActionKind.PICK:
        hero_id = (rng or _timeout_rng(state)).choice(state.available())
    return Timeout(state.step, running.side, step.kind, hero_id, running.deadline)


def _advance(state: DraftState, at: datetime) -> DraftState:
    return replace(state, step=state.step + 1, updated_at=at, turn_started_at=at)


def _with_finish(state: DraftState, events: list[DraftEvent], at: datetime) -> None:
    if state.completed:
        events.append(DraftFinished(state.sequence, at))


def _catch_up(
    state: DraftState, now: datetime, rng: random.Random | None
) -> tuple[DraftState, list[DraftEvent]]:
    """Apply every timeout due by `now`, each at its own deadline."""
    events: list[DraftEvent] = []
    while (timeout := due_timeout(state, now, rng)) is not None:
        used = dict(state.reserve_used_ms)
        used[timeout.side] = state.reserve_ms
        state = replace(state, reserve_used_ms=used)
        if timeout.hero_id is None:
            state = replace(
                _advance(state, timeout.at),
                sequence=state.sequence + 1,
                skipped=(*state.skipped, timeout.step),
            )
            skip = BanSkipped(
                timeout.step, timeout.side, timeout.at, state.sequence, state.next_turn()
            )
            events.append(skip)
        else:
            applied = AppliedAction(
                len(state.actions), timeout.kind, timeout.side, timeout.hero_id, timeout.at, True
            )
            state = replace(
                _advance(state, timeout.at),
                sequence=state.sequence + 1,
                actions=(*state.actions, applied),
            )
            events.append(ActionApplied(applied, state.sequence, state.next_turn()))
        _with_finish(state, events, timeout.at)
    return state, events


def apply_timeout(
    state: DraftState, now: datetime, rng: random.Random | None = None
) -> tuple[DraftState, tuple[DraftEvent, ...]]:
    """Apply every timeout due by `now` (none: the same state and no events).

    Idempotent: applied to its own result at the same `now` it changes nothing, and two replicas
    computing it from the same state get the same result, so the sequence check settles races.
    Raises DraftExpired when the draft's lifetime is over.
    """
    caught_up, events = _catch_up(state, now, rng)
    if now >= caught_up.expires_at:
        raise DraftExpired(state.draft_id)
    return caught_up, tuple(events)


def _check_hero(state: DraftState, hero_id: int) -> None:
    if hero_id not in state.hero_pool:
        raise UnknownHero(hero_id)
    if hero_id in state.taken():
        raise DuplicateHero(hero_id)


def _nominated_ban(
    state: DraftState, action: Action, now: datetime, events: list[DraftEvent]
) -> tuple[DraftState, tuple[DraftEvent, ...]]:
    if len(state.bans(action.side)) >= state.rules.nominated_bans:
        raise WrongKind(
            f"{action.side.value} already has {state.rules.nominated_bans} nominated bans",
            draft_id=state.draft_id,
        )
    _check_hero(state, action.hero_id)
    applied = AppliedAction(len(state.actions), action.kind, action.side, action.hero_id, now)
    # Bans come outside the step order: the first pick's clock keeps running.
    state = replace(
        state, sequence=state.sequence + 1, actions=(*state.actions, applied), updated_at=now
    )
    events.append(ActionApplied(applied, state.sequence, state.next_turn()))
    return state, tuple(events)


def apply(
    state: DraftState,
    action: Action,
    now: datetime,
    *,
    expected_sequence: int | None = None,
    rng: random.Random | None = None,
) -> tuple[DraftState, tuple[DraftEvent, ...]]:
    """Apply `action` at `now`: the new state and the events to broadcast, in order.

    Timeouts due by `now` are applied first (their events lead), so an action that comes after
    its side's time ran out is judged against the draft as the clock left it. `expected_sequence`
    is compared with the sequence after those timeouts (the one GetDraft shows): a client that
    read the draft before its clock ran out meant a step the timeout has taken, so its action
    must not land on the next one. Raises
    DraftExpired, VersionMismatch (`expected_sequence` is not the caught-up sequence),
    DraftCompleted, UnknownHero, OutOfTurn, WrongKind or DuplicateHero; on an error nothing is
    applied, the due timeouts included (the next call or `apply_timeout` applies them, with the
    same result).
    """
    # A replica whose clock lags must not move the draft's time backwards.
    now = max(now, state.updated_at)
    caught_up, events = _catch_up(state, now, rng)
    if now >= caught_up.expires_at:
        raise DraftExpired(state.draft_id)
    if expected_sequence is not None and expected_sequence != caught_up.sequence:
        raise VersionMismatch(state.draft_id, expected=expected_sequence, actual=caught_up.sequence)
    state = caught_up
    step = state.current_step()
    if step is None:
        raise DraftCompleted(state.draft_id)
    if action.hero_id not in state.hero_pool:
        raise UnknownHero(action.hero_id)
    if action.kind is ActionKind.BAN and state.nominating():
        return _nominated_ban(state, action, now, events)
    side = state.side_of(step.seat)
    if action.side is not side:
        raise OutOfTurn(
            f"it is {side.value}'s turn to {step.kind.value}, not {action.side.value}'s",
            draft_id=state.draft_id,
        )
    if action.kind is not step.kind:
        raise WrongKind(
            f"{side.value} must {step.kind.value} now, not {action.kind.value}",
            draft_id=state.draft_id,
        )
    _check_hero(state, action.hero_id)
    used = dict(state.reserve_used_ms)
    if state.timed:
        over = now - state.turn_started_at - timedelta(seconds=step.seconds)
        used[side] = min(used[side] + max(_ms(over), 0), state.reserve_ms)
    applied = AppliedAction(len(state.actions), action.kind, side, action.hero_id, now)
    state = replace(
        _advance(state, now),
        sequence=state.sequence + 1,
        actions=(*state.actions, applied),
        reserve_used_ms=used,
    )
    events.append(ActionApplied(applied, state.sequence, state.next_turn()))
    _with_finish(state, events, now)
    return state, tuple(events)


def mirror_actions(
    state: DraftState,
    posted: Sequence[Action],
    now: datetime,
    turn: tuple[Side | None, ActionKind | None] = (None, None),
) -> tuple[DraftState, tuple[DraftEvent, ...]]:
    """Bring a mirror draft up to the game's `posted` actions (in the game's order).

    `posted` a prefix of (or equal to) the applied actions: the same state and no events (a
    repeated or out-of-date post). The applied actions a prefix of `posted`: the missing suffix
    is appended, one ActionApplied each (plus DraftFinished once both sides have 5 picks), and
    the next turn becomes `turn` (the game's word; an unknown part keeps Radiant / ban). Anything
    else contradicts the draft: MirrorConflict, nothing applied. The suffix is checked whole
    before anything is applied: UnknownHero, DuplicateHero, TooManyPicks, DraftCompleted.
    """
    if not state.mirror:
        raise NotAMirror(state.draft_id)
    for index, (applied, action) in enumerate(zip(state.actions, posted, strict=False)):
        if (applied.kind, applied.side, applied.hero_id) != (
            action.kind,
            action.side,
            action.hero_id,
        ):
            raise MirrorConflict(state.draft_id, index)
    suffix = posted[len(state.actions) :]
    if not suffix:
        return state, ()
    now = max(now, state.updated_at)
    if now >= state.expires_at:
        raise DraftExpired(state.draft_id)
    events: list[DraftEvent] = []
    for position, action in enumerate(suffix):
        if state.completed:
            raise DraftCompleted(state.draft_id)
        _check_hero(state, action.hero_id)
        if action.kind is ActionKind.PICK and len(state.picks(action.side)) >= PICKS_PER_SIDE:
            raise TooManyPicks(action.side.value, PICKS_PER_SIDE)
        applied = AppliedAction(len(state.actions), action.kind, action.side, action.hero_id, now)
        following = suffix[position + 1] if position + 1 < len(suffix) else None
        if following is not None:
            next_turn: tuple[Side, ActionKind] | None = (following.side, following.kind)
        else:
            next_turn = (turn[0] or Side.RADIANT, turn[1] or ActionKind.BAN)
        state = replace(
            state,
            sequence=state.sequence + 1,
            actions=(*state.actions, applied),
            updated_at=now,
            turn_started_at=now,
            mirror_turn=next_turn,
        )
        events.append(ActionApplied(applied, state.sequence, state.next_turn()))
        _with_finish(state, events, now)
    return state, tuple(events)
