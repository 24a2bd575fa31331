"""The draft service's application layer: create, join, act and time out, atomically over the
draft store, producing the events every watcher sees.

Every change is load -> check (seat and rules) -> commit with compare-and-set on the stored
revision. A lost race re-loads and re-checks, so of N racing submitters exactly one wins and each
other one gets the error the draft as it now stands gives its action (DUPLICATE_HERO,
ILLEGAL_DRAFT_ACTION, PERMISSION_DENIED ...) or, when its action would still be legal,
VERSION_MISMATCH: an action is meant for the step the draft stood at when it arrived, never
carried over to the next one (where one side acts twice in a row, a double click must not ban
two heroes). With expected_sequence, a mismatch is VERSION_MISMATCH before anything else; it is
compared with the sequence after the timeouts due by now (the sequence GetDraft shows).
Timeouts go through the same loop; the rules make them deterministic, so two replicas applying
the same timeout compute the same change and only one commit lands.

No gRPC or protobuf here. The store is anything shaped like `services.draft.repo.DraftStore`
(`DraftStorage`); event payloads are plain dicts tagged with "type".
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.common.dota import Side, SkillBracket
from services.common.dota_constants import DotaConstants
from services.common.errors import NotFound
from services.draft.errors import DraftExpired, NotAMirror, VersionMismatch, WrongGsiToken
from services.draft.modes import ActionKind, DraftMode
from services.draft.rooms import (
    Actor,
    CreatorSeat,
    DraftDocument,
    check_may_act,
    hash_code,
    join,
    open_room,
)
from services.draft.rules import (
    Action,
    ActionApplied,
    BanSkipped,
    DraftEvent,
    DraftFinished,
    DraftState,
    Timers,
    Turn,
    apply,
    apply_timeout,
    clock,
    create_draft,
    mirror_actions,
)

log = logging.getLogger(__name__)

# A lost compare-and-set means someone else changed the draft; a handful of re-checks settles
# any realistic race (each retry sees a newer draft, and the rules reject most repeats).
MAX_ATTEMPTS = 50


class StoredDocument(Protocol):
    """A stored draft: its document and the revision compare-and-set checks."""

    @property
    def document(self) -> dict[str, Any]: ...

    @property
    def revision(self) -> int: ...


class DraftStorage(Protocol):
    """What this layer needs of `services.draft.repo.DraftStore`."""

    async def create(
        self,
        draft_id: str,
        document: dict[str, Any],
        *,
        expires_at: datetime,
        deadline: datetime | None,
        events: Sequence[tuple[int, dict[str, Any]]] = (),
    ) -> None: ...

    async def load(self, draft_id: str) -> Any: ...

    async def commit(
        self,
        draft_id: str,
        *,
        expected_revision: int,
        document: dict[str, Any],
        events: Sequence[tuple[int, dict[str, Any]]],
        expires_at: datetime,
        deadline: datetime | None,
    ) -> bool: ...


@dataclass(frozen=True)
class FinalPrediction:
    """The model's word on a finished draft."""

    radiant_win_probability: float
    model_version: str


# Asked (once, bounded by `final_prediction_seconds`) before a finishing change commits, so
# `completed` carries the probability atomically with the last action; None when the model is
# unavailable or slow.
FinalPredictor = Callable[[DraftDocument], Awaitable[FinalPrediction | None]]
ChangeListener = Callable[[DraftDocument], None]
PreferenceReader = Callable[[str], Awaitable[SkillBracket | None]]


def utcnow() -> datetime:
    """Now, timezone-aware."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class NewDraft:
    """A CreateDraft request in domain terms."""

    mode: DraftMode
    patch: str
    bracket: SkillBracket | None
    our_side: Side | None
    account_id: int | None
    first_pick: Side
    seat: CreatorSeat
    timers: Timers | None
    # A mirror of a real game's draft (MirrorGameDraft); needs timers None.
    mirror: bool = False


@dataclass(frozen=True)
class Submitted:
    """The outcome of an accepted action: the draft after it, and its action_applied event."""

    document: DraftDocument
    event: dict[str, Any]


# -- event payloads --------------------------------------------------------------------------


def clock_payload(state: DraftState, now: datetime) -> dict[str, Any] | None:
    """The running clock at `now` (None without timers or once complete)."""
    running = clock(state, now)
    if running is None:
        return None
    reserves = {side: state.reserve_left(side) for side in Side}
    return {
        "side": running.side.value,
        "step_ends_at": (running.deadline - reserves[running.side]).isoformat(),
        "deadline": running.deadline.isoformat(),
        "radiant_reserve_ms": reserves[Side.RADIANT] // timedelta(milliseconds=1),
        "dire_reserve_ms": reserves[Side.DIRE] // timedelta(milliseconds=1),
    }


def _turn(turn: Turn | None, clock_now: dict[str, Any] | None) -> dict[str, Any] | None:
    if turn is None:
        return None
    payload = turn.to_dict()
    payload["deadline"] = None if clock_now is None else clock_now["deadline"]
    return payload


def event_payloads(
    events: Sequence[DraftEvent], state: DraftState, prediction: FinalPrediction | None
) -> list[tuple[int, dict[str, Any]]]:
    """The log entries of the rules' events: the last one carries the clock of `state` (the
    state after all of them); earlier ones (timeouts caught up on the way) have none."""
    entries: list[tuple[int, dict[str, Any]]] = []
    last = max((i for i, e in enumerate(events) if not isinstance(e, DraftFinished)), default=-1)
    for index, event in enumerate(events):
        running = clock_payload(state, event.at if isinstance(event, DraftFinished) else _at(event))
        running = running if index == last else None
        if isinstance(event, ActionApplied):
            payload = event.to_dict()
            payload["next_turn"] = _turn(event.next_turn, running)
            payload["clock"] = running
        elif isinstance(event, BanSkipped):
            payload = event.to_dict()
            payload["next_turn"] = _turn(event.next_turn, running)
        else:
            payload = event.to_dict()
            if prediction is not None:
                payload["radiant_win_probability"] = prediction.radiant_win_probability
                payload["model_version"] = prediction.model_version
        entries.append((event.sequence, payload))
    return entries


def _at(event: ActionApplied | BanSkipped) -> datetime:
    return event.action.at if isinstance(event, ActionApplied) else event.at


def _deadline(state: DraftState, now: datetime) -> datetime | None:
    running = clock(state, now)
    return None if running is None else running.deadline


# -- the application layer -------------------------------------------------------------------


class Drafts:
    """Create, join, act, time out: each one atomic over the store."""

    def __init__(
        self,
        store: DraftStorage,
        constants: DotaConstants,
        *,
        predict_final: FinalPredictor | None = None,
        on_change: ChangeListener | None = None,
        default_bracket: PreferenceReader | None = None,
        now: Callable[[], datetime] = utcnow,
        final_prediction_seconds: float = 0.5,
    ) -> None:
        self._store = store
        self._final_timeout = final_prediction_seconds
        self._constants = constants
        self._predict_final = predict_final
        self._on_change = on_change
        self._default_bracket = default_bracket
        self._now = now

    def current_patch(self) -> str:
        """The patch a draft without one uses: the one live now, by the constants."""
        patch = self._constants.patch_at(int(self._now().timestamp()))
        return patch.name if patch is not None else self._constants.patches[-1].name

    async def create(self, actor: Actor, request: NewDraft) -> tuple[DraftDocument, str | None]:
        """A new draft at sequence 0 and the invite code of its open seat (None if none)."""
        document, code, _ = await self.create_with_secrets(actor, request)
        return document, code

    async def create_with_secrets(
        self, actor: Actor, request: NewDraft
    ) -> tuple[DraftDocument, str | None, str | None]:
        """`create`, also giving a mirror draft's GSI token (only its hash is stored; None for
        other drafts)."""
        now = self._now()
        bracket = request.bracket
        if bracket is None and self._default_bracket is not None:
            bracket = await self._default_bracket(actor.user_id)
        room, code = open_room(
            creator=actor,
            bracket=bracket or SkillBracket.ALL,
            our_side=request.our_side,
            account_id=request.account_id,
            seat=request.seat,
            timers=request.timers,
        )
        gsi_token = None
        if request.mirror:
            # 192 bits: it sits in a cfg file on an observer's machine and guards the draft.
            gsi_token = secrets.token_urlsafe(24)
            room = replace(room, gsi_hash=hash_code(gsi_token))
        state = create_draft(
            # 128 bits: draft ids are the only thing standing between a stranger and a draft.
            draft_id=secrets.token_urlsafe(16),
            mode=request.mode,
            patch=request.patch or self.current_patch(),
            first_pick=request.first_pick,
            created_at=now,
            seed=random.SystemRandom().getrandbits(63),
            constants=self._constants,
            timers=request.timers,
            mirror=request.mirror,
        )
        document = DraftDocument(state, room)
        await self._store.create(
            state.draft_id,
            document.to_dict(),
            expires_at=state.expires_at,
            deadline=_deadline(state, now),
        )
        self._changed(document)
        return document, code, gsi_token

    async def get(self, draft_id: str) -> tuple[DraftDocument, int]:
        """The stored draft and its revision; NotFound for an unknown or expired draft."""
        stored = await self._store.load(draft_id)
        if stored is None:
            raise NotFound(f"draft {draft_id} does not exist or has expired")
        document = DraftDocument.from_dict(stored.document)
        if self._now() >= document.state.expires_at:
            raise DraftExpired(draft_id)
        return document, int(stored.revision)

    async def view(self, draft_id: str) -> DraftDocument:
        """The draft as it stands now: the stored one with the timeouts due by now applied (the
        sweeper may not have committed them yet; it will commit exactly these), so the sequence
        shown is the one SubmitAction's expected_sequence is compared with."""
        document, _ = await self.get(draft_id)
        now = max(self._now(), document.state.updated_at)
        caught_up, events = apply_timeout(document.state, now)
        return replace(document, state=caught_up) if events else document

    async def join(
        self, actor: Actor, draft_id: str, code: str, account_id: int | None
    ) -> tuple[DraftDocument, Side]:
        """Take the seat `code` opens; joining again by its holder returns the draft."""
        for _ in range(MAX_ATTEMPTS):
            document, revision = await self.get(draft_id)
            joined, side, changed = join(document, actor, code, account_id)
            if not changed:
                return joined, side
            captain = joined.room.captains[side]
            event = {
                "type": "captain_joined",
                "side": side.value,
                "sequence": joined.state.sequence,
                **captain.to_dict(),
            }
            state = joined.state
            if await self._store.commit(
                draft_id,
                expected_revision=revision,
                document=joined.to_dict(),
                events=[(state.sequence, event)],
                expires_at=state.expires_at,
                deadline=_deadline(state, self._now()),
            ):
                return joined, side
        raise RuntimeError(f"draft {draft_id}: join lost {MAX_ATTEMPTS} races in a row")

    async def submit(
        self,
        actor: Actor,
        draft_id: str,
        action: Action,
        *,
        expected_sequence: int | None = None,
    ) -> Submitted:
        """Apply `action` for `actor`; raises the seat's or the rules' error, re-checking after a
        lost race (see the module docstring for which error a racer that lost gets)."""
        # The sequence this request met first: after a lost race the action is re-checked
        # against the draft that won, and refused with VERSION_MISMATCH if it is still legal
        # there, rather than applied to a step it was not meant for.
        met: int | None = None
        predictions = _Predictions()
        for _ in range(MAX_ATTEMPTS):
            document, revision = await self.get(draft_id)
            now = max(self._now(), document.state.updated_at)
            caught_up, _ = apply_timeout(document.state, now)
            if expected_sequence is not None and expected_sequence != caught_up.sequence:
                # Before the seat check: a racer that lost learns it lost, not that it may not
                # act (the winner's action moved the turn to the other captain).
                raise VersionMismatch(
                    draft_id, expected=expected_sequence, actual=caught_up.sequence
                )
            if document.state.mirror:
                raise NotAMirror(
                    draft_id,
                    f"draft {draft_id} mirrors a game: its actions come only from the game "
                    "(MirrorGameDraft)",
                )
            check_may_act(document, caught_up, actor, action)
            state, events = apply(document.state, action, now, expected_sequence=expected_sequence)
            if met is None:
                met = caught_up.sequence
            elif met != caught_up.sequence:
                raise VersionMismatch(draft_id, expected=met, actual=caught_up.sequence)
            committed = await self._commit(
                document, revision, state, events, now, predictions=predictions
            )
            if committed is not None:
                applied = [
                    payload
                    for _, payload in event_payloads(events, state, None)
                    if payload["type"] == "action_applied" and not payload["action"]["timed_out"]
                ]
                return Submitted(committed, applied[-1])
        raise RuntimeError(f"draft {draft_id}: action lost {MAX_ATTEMPTS} races in a row")

    async def mirror(
        self,
        draft_id: str,
        gsi_token: str,
        posted: Sequence[Action],
        turn: tuple[Side | None, ActionKind | None] = (None, None),
    ) -> tuple[DraftDocument, int]:
        """Bring a mirror draft up to the game's `posted` actions (`rules.mirror_actions`):
        the draft after it and how many actions this call applied (0 for a repeated or
        out-of-date post). Compare-and-set like every change: a lost race re-loads and
        re-compares, so two posts of the same game state apply it once between them."""
        predictions = _Predictions()
        for _ in range(MAX_ATTEMPTS):
            document, revision = await self.get(draft_id)
            if not document.state.mirror:
                raise NotAMirror(draft_id)
            if not document.room.gsi_token_matches(gsi_token):
                raise WrongGsiToken(draft_id)
            state, events = mirror_actions(document.state, posted, self._now(), turn)
            if not events:
                return document, 0
            applied = sum(isinstance(e, ActionApplied) for e in events)
            committed = await self._commit(
                document, revision, state, events, self._now(), predictions=predictions
            )
            if committed is not None:
                return committed, applied
        raise RuntimeError(f"draft {draft_id}: mirror lost {MAX_ATTEMPTS} races in a row")

    async def timeout(self, draft_id: str) -> bool:
        """Apply the timeouts due now, if any; True if this call committed them.

        Replicas racing on the same timeout compute the same change (the rules are
        deterministic), and compare-and-set lets exactly one commit land.
        """
        predictions = _Predictions()
        for _ in range(MAX_ATTEMPTS):
            try:
                document, revision = await self.get(draft_id)
            except NotFound:
                return False
            now = self._now()
            state, events = apply_timeout(document.state, now)
            if not events:
                return False
            if (
                await self._commit(document, revision, state, events, now, predictions=predictions)
                is not None
            ):
                return True
        return False

    async def _commit(
        self,
        document: DraftDocument,
        revision: int,
        state: DraftState,
        events: Sequence[DraftEvent],
        now: datetime,
        *,
        predictions: _Predictions,
    ) -> DraftDocument | None:
        """Compare-and-set the new state with its events; None when another change won."""
        after = replace(document, state=state)
        prediction = None
        if state.completed:
            prediction = await self._final_prediction(after, predictions)
        ok = await self._store.commit(
            state.draft_id,
            expected_revision=revision,
            document=after.to_dict(),
            events=event_payloads(events, state, prediction),
            expires_at=state.expires_at,
            deadline=_deadline(state, now),
        )
        if not ok:
            return None
        self._changed(after)
        return after

    async def _final_prediction(
        self, document: DraftDocument, predictions: _Predictions
    ) -> FinalPrediction | None:
        """The model's word on a finished draft, asked once per final state and call (a retry
        after a lost race reuses it) and waited for at most `final_prediction_seconds`: the
        draft's last change must not wait on the model."""
        if self._predict_final is None:
            return None
        key = (document.state.sequence, document.state.actions)
        if predictions.key != key:
            predictions.key = key
            try:
                async with asyncio.timeout(self._final_timeout):
                    predictions.value = await self._predict_final(document)
            except TimeoutError:
                log.info("draft %s: no final prediction in time", document.draft_id)
                predictions.value = None
        return predictions.value

    def _changed(self, document: DraftDocument) -> None:
        if self._on_change is not None:
            self._on_change(document)


class _Predictions:
    """The final prediction one call already asked for, by the final state it was for."""

    __slots__ = ("key", "value")

    def __init__(self) -> None:
        self.key: object = None
        self.value: FinalPrediction | None = None
