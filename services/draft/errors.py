"""The draft rules' domain errors, each carrying the contract's ErrorReason.

They extend `services.common.errors`, so the gRPC edge maps them to a status and an ErrorInfo
exactly once, like every other service's errors (`services.common.interceptors`).
"""

from __future__ import annotations

from services.common.errors import (
    DependencyUnavailable,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)


class UnknownPatch(InvalidArgument):
    """The patch is unknown to the constants, or no draft rules cover it."""

    def __init__(self, patch: str, message: str | None = None) -> None:
        super().__init__(
            message or f"unknown patch {patch!r}",
            field="patch",
            reason="ERROR_REASON_UNKNOWN_PATCH",
            metadata={"patch": patch},
        )
        self.patch = patch


class UnknownHero(InvalidArgument):
    """The hero id is not a hero of this draft's pool."""

    def __init__(self, hero_id: int) -> None:
        super().__init__(
            f"hero {hero_id} is not a known hero",
            field="action.hero_id",
            reason="ERROR_REASON_UNKNOWN_HERO",
            metadata={"hero_id": str(hero_id)},
        )
        self.hero_id = hero_id


class DuplicateHero(InvalidArgument):
    """The hero was already picked or banned in this draft."""

    def __init__(self, hero_id: int) -> None:
        super().__init__(
            f"hero {hero_id} is already picked or banned in this draft",
            field="action.hero_id",
            reason="ERROR_REASON_DUPLICATE_HERO",
            metadata={"hero_id": str(hero_id)},
        )
        self.hero_id = hero_id


class IllegalDraftAction(InvalidArgument):
    """The action is not legal at this point of the draft (INVALID_ARGUMENT per the contract)."""

    def __init__(self, message: str, *, draft_id: str, field: str) -> None:
        super().__init__(
            message,
            field=field,
            reason="ERROR_REASON_ILLEGAL_DRAFT_ACTION",
            metadata={"draft_id": draft_id},
        )
        self.draft_id = draft_id


class OutOfTurn(IllegalDraftAction):
    """The other side is to act."""

    def __init__(self, message: str, *, draft_id: str) -> None:
        super().__init__(message, draft_id=draft_id, field="action.side")


class WrongKind(IllegalDraftAction):
    """A pick when a ban is due, or the reverse (or a nominated ban beyond the allowance)."""

    def __init__(self, message: str, *, draft_id: str) -> None:
        super().__init__(message, draft_id=draft_id, field="action.kind")


class TooManyPicks(InvalidArgument):
    """A side would have more than its picks."""

    def __init__(self, side: str, limit: int) -> None:
        super().__init__(
            f"{side} already has {limit} picks",
            field="actions",
            reason="ERROR_REASON_TOO_MANY_PICKS",
            metadata={"side": side},
        )


class NotAMirror(FailedPrecondition):
    """MirrorGameDraft on a draft that is not a mirror, or SubmitAction on one that is."""

    def __init__(self, draft_id: str, message: str | None = None) -> None:
        super().__init__(
            message or f"draft {draft_id} is not a mirror draft", metadata={"draft_id": draft_id}
        )


class MirrorConflict(FailedPrecondition):
    """A posted game draft contradicts the mirror's applied actions."""

    def __init__(self, draft_id: str, index: int) -> None:
        super().__init__(
            f"the game's action {index} differs from the one draft {draft_id} applied",
            metadata={"draft_id": draft_id, "order": str(index)},
        )


class WrongGsiToken(PermissionDenied):
    """The GSI token is not the mirror draft's."""

    def __init__(self, draft_id: str) -> None:
        super().__init__(
            f"the gsi_token is not draft {draft_id}'s", metadata={"draft_id": draft_id}
        )


class DraftCompleted(FailedPrecondition):
    """The draft already has its last pick (FAILED_PRECONDITION, ILLEGAL_DRAFT_ACTION)."""

    def __init__(self, draft_id: str) -> None:
        super().__init__(f"draft {draft_id} is complete", metadata={"draft_id": draft_id})
        self.draft_id = draft_id


class VersionMismatch(FailedPrecondition):
    """expected_sequence is not the draft's sequence: another change won the race."""

    reason = "ERROR_REASON_VERSION_MISMATCH"

    def __init__(self, draft_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"draft {draft_id} is at sequence {actual}, not {expected}; re-read and retry",
            metadata={"draft_id": draft_id, "field": "expected_sequence"},
        )
        self.expected = expected
        self.actual = actual


class DraftExpired(NotFound):
    """The draft's last change is over its lifetime ago; the contract answers NOT_FOUND."""

    def __init__(self, draft_id: str) -> None:
        super().__init__(f"draft {draft_id} has expired", metadata={"draft_id": draft_id})
        self.draft_id = draft_id


class SeatUnavailable(FailedPrecondition):
    """The invite code is wrong, or the seat it opens is held by someone else."""

    reason = "ERROR_REASON_SEAT_UNAVAILABLE"

    def __init__(self, draft_id: str, message: str) -> None:
        super().__init__(message, metadata={"draft_id": draft_id})
        self.draft_id = draft_id


class NotYourTurn(PermissionDenied):
    """The caller is not the captain of the side to act (a spectator, or the other captain)."""

    def __init__(self, draft_id: str, message: str) -> None:
        super().__init__(message, metadata={"draft_id": draft_id})
        self.draft_id = draft_id


class NotYourAccount(PermissionDenied):
    """account_id is not the caller's own Steam account."""

    def __init__(self, account_id: int) -> None:
        super().__init__(
            f"account_id {account_id} is not the caller's own Steam account",
            metadata={"field": "account_id"},
        )


class ReplicaUnavailable(DependencyUnavailable):
    """This replica cannot go on serving a watch: it is shutting down, or its event reader is
    recovering from a failure. UNAVAILABLE: reconnect (any replica serves any draft) and resume
    after the last sequence seen. The ErrorInfo's `dependency` is "draft-replica" (the replica
    itself, not a store) and `situation` says which case it is."""

    SHUTTING_DOWN = "shutting_down"
    READER_FAILED = "reader_failed"

    def __init__(self, situation: str) -> None:
        message = (
            "this draft replica is shutting down; reconnect and resume after your last sequence"
            if situation == self.SHUTTING_DOWN
            else "this draft replica cannot stream events right now; reconnect and resume after "
            "your last sequence"
        )
        super().__init__("draft-replica", message)
        self.metadata["situation"] = situation
        self.situation = situation
