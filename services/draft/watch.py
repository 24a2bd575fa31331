"""WatchDraft's logic, free of gRPC: what a watcher is sent, in which order, from the event log.

Any replica serves any watcher: everything comes from the draft's event log (the store) through
this replica's hub, never from in-process memory of who changed what. The rules, from
draft_service.proto:

- no resume point: a snapshot, the latest suggestions for it, then live changes;
- resume after N: the action_applied / ban_skipped events with sequence > N from the log, then the
  latest suggestions, then live; a fresh snapshot instead when the log no longer holds them or N
  is ahead of the draft;
- `completed` ends the stream; a watcher too slow for its queue gets a fresh snapshot and goes on.

Nothing is sent twice and nothing is lost: the live subscription starts right after the last log
entry read, and entries already reflected in what was sent (by sequence) are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from services.common.dota import Side
from services.draft.drafts import Drafts
from services.draft.errors import ReplicaUnavailable
from services.draft.rooms import DraftDocument

STEP_TYPES = frozenset({"action_applied", "ban_skipped"})


class Logged(Protocol):
    """A log entry (`services.draft.repo.LoggedEvent`)."""

    @property
    def event_id(self) -> str: ...

    @property
    def sequence(self) -> int: ...

    @property
    def payload(self) -> dict[str, Any]: ...


class EventLog(Protocol):
    """What watching needs of the store."""

    async def events_after(self, draft_id: str, after_sequence: int) -> Sequence[Any] | None: ...

    async def last_event_id(self, draft_id: str) -> str: ...


class Subscriber(Protocol):
    """What watching needs of the hub (`services.draft.hub.DraftHub`)."""

    def subscribe(
        self, draft_id: str, after_event_id: str
    ) -> AbstractAsyncContextManager[Feed]: ...


class Feed(Protocol):
    """A live subscription (`services.draft.hub.Subscription`)."""

    def __aiter__(self) -> AsyncIterator[Any]: ...

    @property
    def end_reason(self) -> str | None: ...


# The values of Subscription.end_reason (services.draft.hub) that watching tells apart.
_GONE = "gone"
_FAILED = "failed"


@dataclass(frozen=True)
class Snapshot:
    """Send the whole draft."""

    document: DraftDocument


@dataclass(frozen=True, slots=True)
class Entry:
    """Send one log entry (its payload, tagged with "type"). `event_id` is its id in the log
    (None for one made up here): the same for every watcher, so the transport can convert each
    entry once per replica rather than once per watcher."""

    payload: dict[str, Any]
    event_id: str | None = None


WatchItem = Snapshot | Entry


def _completed_payload(document: DraftDocument) -> dict[str, Any]:
    # Used only when the log lost the draft's own `completed` entry (trimmed): no probability.
    return {
        "type": "completed",
        "sequence": document.state.sequence,
        "at": document.state.updated_at.isoformat(),
    }


class Watch:
    """One watcher's stream."""

    def __init__(
        self,
        drafts: Drafts,
        log: EventLog,
        hub: Subscriber,
        is_overflow: Callable[[object], bool],
    ) -> None:
        self._drafts = drafts
        self._log = log
        self._hub = hub
        self._is_overflow = is_overflow

    async def stream(self, draft_id: str, resume_after: int | None) -> AsyncIterator[WatchItem]:
        """The items to send, until the draft completes. Raises NotFound up front."""
        while True:
            start = await self._start(draft_id, resume_after)
            for item in start.items:
                yield item
            if start.done:
                return
            position = start.position
            overflowed = False
            async with self._hub.subscribe(draft_id, start.cursor) as subscription:
                async for event in subscription:
                    if self._is_overflow(event):
                        overflowed = True
                        break
                    if not _news(event, position):
                        continue
                    if event.payload["type"] in STEP_TYPES:
                        position = event.sequence
                    yield Entry(event.payload, event.event_id)
                    if event.payload["type"] == "completed":
                        return
            if not overflowed:
                # The hub ended the subscription: the draft's stream is gone (expired: this
                # raises NotFound), the replica shuts down, or its reader failed.
                reason = subscription.end_reason
                if reason == _GONE:
                    await self._drafts.get(draft_id)
                raise ReplicaUnavailable(
                    ReplicaUnavailable.READER_FAILED
                    if reason == _FAILED
                    else ReplicaUnavailable.SHUTTING_DOWN
                )
            # Too slow for its queue: start over from a fresh snapshot.
            resume_after = None

    async def _start(self, draft_id: str, resume_after: int | None) -> _Start:
        """What comes before the live tail: a snapshot or the replay, the latest suggestions,
        and where the live tail starts."""
        # The cursor is read before the draft, so every entry after it is either reflected in
        # the draft read (and skipped by sequence) or newer; none falls between.
        cursor = await self._log.last_event_id(draft_id)
        document, _ = await self._drafts.get(draft_id)
        sequence = document.state.sequence
        items: list[WatchItem] = []
        entries: Sequence[Any] | None = None
        if resume_after is not None and resume_after <= sequence:
            entries = await self._log.events_after(draft_id, resume_after - 1)
        if entries is None:
            items.append(Snapshot(document))
            entries = await self._log.events_after(draft_id, sequence - 1) or []
            position = sequence
        else:
            position = resume_after or 0
        # The log may also hold what happened since the draft was read: sent now, in order.
        for entry in entries:
            if entry.payload["type"] in STEP_TYPES and entry.sequence > position:
                items.append(Entry(entry.payload, entry.event_id))
                position = entry.sequence
            elif entry.payload["type"] == "captain_joined" and not _seated(document, entry):
                items.append(Entry(entry.payload, entry.event_id))
        latest = [
            e
            for e in entries
            if e.payload["type"] == "suggestions_updated" and e.sequence == position
        ]
        if latest:
            items.append(Entry(latest[-1].payload, latest[-1].event_id))
        finished = [e for e in entries if e.payload["type"] == "completed"]
        if finished:
            items.append(Entry(finished[-1].payload, finished[-1].event_id))
            return _Start(items, cursor, position, done=True)
        if document.state.completed and position >= sequence:
            # The log lost the draft's own `completed` entry (trimmed): one without probability.
            items.append(Entry(_completed_payload(document)))
            return _Start(items, cursor, position, done=True)
        if entries:
            cursor = max(cursor, entries[-1].event_id, key=_event_order)
        return _Start(items, cursor, position, done=False)


@dataclass(frozen=True)
class _Start:
    items: list[WatchItem]
    cursor: str
    position: int
    done: bool


def _seated(document: DraftDocument, entry: Any) -> bool:
    """Whether the draft read already shows the captain a captain_joined entry seats."""
    holder = document.room.captain(Side(entry.payload["side"]))
    return holder is not None and holder.user_id == entry.payload["user_id"]


def _news(event: Any, position: int) -> bool:
    """Whether a live entry is new to a watcher that has seen up to `position`."""
    kind = event.payload["type"]
    if kind in STEP_TYPES:
        return bool(event.sequence > position)
    if kind == "suggestions_updated":
        return bool(event.sequence >= position)
    return True


def _event_order(event_id: str) -> tuple[int, int]:
    sequence, _, n = event_id.partition("-")
    try:
        return int(sequence), int(n or 0)
    except ValueError:
        return -1, -1
