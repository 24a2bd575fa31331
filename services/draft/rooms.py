"""Draft rooms: who sits in the captain seats, the invite code of an open seat, who may act, and
the stored document (the rules' DraftState plus the room).

Pure domain code: no gRPC, protobuf or Redis. Only a hash of an invite code is kept, so whoever
reads the store cannot take a seat with what they read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Self

from services.common.dota import Side, SkillBracket
from services.draft.errors import NotYourAccount, NotYourTurn, SeatUnavailable
from services.draft.modes import ActionKind
from services.draft.rules import Action, DraftState, Timers

# Enough entropy that guessing a live code is hopeless (72 bits), short enough to paste in chat.
_INVITE_BYTES = 9


@dataclass(frozen=True)
class Actor:
    """Who asks, as far as a room cares: the user, their own Steam account, whether admin."""

    user_id: str
    account_id: int | None = None
    admin: bool = False

    def check_own_account(self, account_id: int | None) -> None:
        """Only one's own Steam account may personalise suggestions (admins excepted)."""
        if account_id is not None and account_id != self.account_id and not self.admin:
            raise NotYourAccount(account_id)


@dataclass(frozen=True)
class Captain:
    """A captain seat's holder; `account_id` personalises that side's pick suggestions."""

    user_id: str
    account_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"user_id": self.user_id, "account_id": self.account_id}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        account = raw.get("account_id")
        return cls(str(raw["user_id"]), None if account is None else int(account))


class CreatorSeat(Enum):
    """Which captain seats the creator takes."""

    BOTH = "both"
    OUR_SIDE = "our_side"


def hash_code(code: str) -> str:
    """The stored form of an invite code."""
    return hashlib.sha256(code.encode()).hexdigest()


@dataclass(frozen=True)
class Room:
    """Everything about a draft that is not the rules' state: settings and seats."""

    creator_id: str
    bracket: SkillBracket
    our_side: Side | None = None
    account_id: int | None = None
    captains: Mapping[Side, Captain] = field(default_factory=dict)
    # sha256 of the invite code of the open seat; None when the creator took both seats.
    invite_hash: str | None = None
    timers: Timers | None = None
    # sha256 of a mirror draft's GSI token (what MirrorGameDraft checks); None otherwise.
    gsi_hash: str | None = None

    def gsi_token_matches(self, token: str) -> bool:
        """Whether `token` is this mirror draft's GSI token (constant-time on the hashes)."""
        return self.gsi_hash is not None and hmac.compare_digest(self.gsi_hash, hash_code(token))

    def captain(self, side: Side) -> Captain | None:
        """The holder of `side`'s seat, or None while it is open."""
        return self.captains.get(side)

    def seats_of(self, user_id: str) -> frozenset[Side]:
        """The sides `user_id` captains."""
        return frozenset(side for side, c in self.captains.items() if c.user_id == user_id)

    def open_side(self) -> Side | None:
        """The seat an invite code opens (held or not), or None without an invite."""
        if self.invite_hash is None:
            return None
        if self.our_side is not None:
            return self.our_side.other
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {
            "creator_id": self.creator_id,
            "bracket": self.bracket.value,
            "our_side": None if self.our_side is None else self.our_side.value,
            "account_id": self.account_id,
            "captains": {side.value: c.to_dict() for side, c in self.captains.items()},
            "invite_hash": self.invite_hash,
            "timers": None if self.timers is None else self.timers.to_dict(),
            "gsi_hash": self.gsi_hash,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        our_side, account, timers = raw.get("our_side"), raw.get("account_id"), raw.get("timers")
        return cls(
            creator_id=str(raw["creator_id"]),
            bracket=SkillBracket(raw["bracket"]),
            our_side=None if our_side is None else Side(our_side),
            account_id=None if account is None else int(account),
            captains={Side(s): Captain.from_dict(c) for s, c in raw["captains"].items()},
            invite_hash=raw.get("invite_hash"),
            timers=None if timers is None else Timers.from_dict(timers),
            gsi_hash=raw.get("gsi_hash"),
        )


@dataclass(frozen=True)
class DraftDocument:
    """What the store keeps per draft: the rules' state and the room, swapped whole."""

    state: DraftState
    room: Room

    @property
    def draft_id(self) -> str:
        """The draft's id."""
        return self.state.draft_id

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return {"state": self.state.to_dict(), "room": self.room.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Self:
        """Inverse of `to_dict`."""
        return cls(DraftState.from_dict(raw["state"]), Room.from_dict(raw["room"]))

    def suggestion_side(self) -> Side | None:
        """The side suggestions are for: our_side, else the side to act (None once complete)."""
        if self.room.our_side is not None:
            return self.room.our_side
        turn = self.state.next_turn()
        return None if turn is None else turn.side


def open_room(
    *,
    creator: Actor,
    bracket: SkillBracket,
    our_side: Side | None,
    account_id: int | None,
    seat: CreatorSeat,
    timers: Timers | None,
) -> tuple[Room, str | None]:
    """A new room and the invite code of its open seat (None when the creator takes both).

    CREATOR_SEAT_OUR_SIDE without our_side is rejected by the caller (an API rule);
    here `seat` OUR_SIDE needs `our_side`.
    """
    creator.check_own_account(account_id)
    captain = Captain(creator.user_id, account_id)
    if seat is CreatorSeat.OUR_SIDE:
        if our_side is None:
            raise ValueError("CreatorSeat.OUR_SIDE needs our_side")
        code = secrets.token_urlsafe(_INVITE_BYTES)
        room = Room(
            creator_id=creator.user_id,
            bracket=bracket,
            our_side=our_side,
            account_id=account_id,
            captains={our_side: captain},
            invite_hash=hash_code(code),
            timers=timers,
        )
        return room, code
    # Both seats: the creator's account personalises the side suggestions are made for, which
    # is the only side it could (they play one side; the other is a "what would they do").
    captains = {
        side: Captain(creator.user_id, account_id if side is our_side else None) for side in Side
    }
    if our_side is None:
        captains = {side: captain for side in Side}
    room = Room(
        creator_id=creator.user_id,
        bracket=bracket,
        our_side=our_side,
        account_id=account_id,
        captains=captains,
        timers=timers,
    )
    return room, None


def join(
    document: DraftDocument, actor: Actor, code: str, account_id: int | None
) -> tuple[DraftDocument, Side, bool]:
    """Take the seat `code` opens: the new document, the side, and whether anything changed
    (False when the same captain joins again). Raises SeatUnavailable or NotYourAccount.

    Joining again is idempotent: the holder gets the draft as it is, whatever account it names
    (a seat's account is set when it is taken), so a retried JoinDraft never announces the same
    captain twice."""
    actor.check_own_account(account_id)
    room = document.room
    side = room.open_side()
    matches = room.invite_hash is not None and hmac.compare_digest(
        room.invite_hash, hash_code(code)
    )
    if side is None or not matches:
        raise SeatUnavailable(document.draft_id, "the invite code does not open a seat here")
    holder = room.captain(side)
    if holder is not None:
        if holder.user_id != actor.user_id:
            raise SeatUnavailable(document.draft_id, f"the {side.value} seat is taken")
        return document, side, False
    captains = {**room.captains, side: Captain(actor.user_id, account_id)}
    return replace(document, room=replace(room, captains=captains)), side, True


def check_may_act(
    document: DraftDocument, caught_up: DraftState, actor: Actor, action: Action
) -> None:
    """Only the captain of the side to act may act, or an admin for either side.

    `caught_up` is the state with due timeouts applied, so the turn is the one the action will
    meet. During ranked All Pick's nominations either side may ban: the captain of
    `action.side` may. A complete draft has no turn: the rules answer for it.
    """
    if actor.admin:
        return
    seats = document.room.seats_of(actor.user_id)
    if not seats:
        raise NotYourTurn(document.draft_id, "only the draft's captains may act; you are watching")
    turn = caught_up.next_turn()
    if turn is None:
        return
    nominating = action.kind is ActionKind.BAN and caught_up.nominating()
    side = action.side if nominating else turn.side
    if side not in seats:
        raise NotYourTurn(
            document.draft_id, f"it is {side.value}'s turn and you are not {side.value}'s captain"
        )
