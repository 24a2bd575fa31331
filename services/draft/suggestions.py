"""Suggestions for live drafts: ModelService (and UserService for the captain's preferences),
asked once per change per draft by the replica that committed the change, never per watcher.

The answer goes to the draft's event log as `suggestions_updated` for the change's sequence; the
store drops it if a newer change happened meanwhile. ModelService being down is not an error: the
draft goes on, this adapter retries in the background (with jittered backoff, for at most
`retry_window_seconds`, and for at most `max_retrying` drafts at a time per replica) until the
model answers or the draft moves on (the next change then asks afresh). UserService being down
only costs personalisation; it is asked alongside the model, not before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from counterpick.common.v1 import common_pb2
from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.common.dota import Side, SkillBracket
from services.common.dota_proto import bracket_from_proto, bracket_to_proto, side_to_proto
from services.common.errors import DependencyUnavailable
from services.draft.convert import state_to_proto, suggestions_payload
from services.draft.drafts import FinalPrediction
from services.draft.rooms import DraftDocument

log = logging.getLogger(__name__)

MetadataProvider = Callable[[], Awaitable[tuple[tuple[str, str], ...]]]
SUGGESTION_LIMIT = 10


async def no_token() -> tuple[tuple[str, str], ...]:
    """A provider that sends no token (until ServiceTokens is wired in; see runtime.py)."""
    return ()


class EventAppender(Protocol):
    """What this adapter needs of the draft store."""

    async def append(self, draft_id: str, sequence: int, payload: dict[str, Any]) -> Any: ...

    async def load(self, draft_id: str) -> Any: ...


class Suggester:
    """Computes a draft's suggestions after each change and logs them; one task per draft."""

    def __init__(
        self,
        store: EventAppender,
        model: grpc.aio.Channel,
        users: grpc.aio.Channel | None,
        metadata: MetadataProvider,
        hero_ids: frozenset[int],
        *,
        call_timeout: float = 3.0,
        retry_seconds: tuple[float, float] = (0.5, 5.0),
        retry_window_seconds: float = 120.0,
        max_retrying: int = 64,
    ) -> None:
        self._store = store
        self._model = model_grpc.ModelServiceStub(model)
        self._users = None if users is None else user_grpc.UserServiceStub(users)
        self._metadata = metadata
        self._heroes = hero_ids
        self._timeout = call_timeout
        self._retry = retry_seconds
        self._retry_window = retry_window_seconds
        self._max_retrying = max_retrying
        # Drafts whose suggestions wait for the model to come back (bounded by max_retrying).
        self.retrying = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def schedule(self, document: DraftDocument) -> None:
        """Ask for the suggestions of this change; an older request for the draft is dropped."""
        if document.state.completed:
            return
        draft_id = document.draft_id
        previous = self._tasks.pop(draft_id, None)
        if previous is not None:
            previous.cancel()
        task = asyncio.get_running_loop().create_task(
            self._run(document), name=f"suggestions-{draft_id}"
        )
        self._tasks[draft_id] = task
        task.add_done_callback(lambda done: self._forget(draft_id, done))

    def _forget(self, draft_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(draft_id) is task:
            del self._tasks[draft_id]

    async def stop(self) -> None:
        """Cancel what is still running (shutdown)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    async def _run(self, document: DraftDocument) -> None:
        message = await self.compute(document)
        if message is None:
            if self.retrying >= self._max_retrying:
                log.info(
                    "suggestions for draft %s: too many retrying, not retried", document.draft_id
                )
                return
            self.retrying += 1
            try:
                message = await self._retry_until_answered(document)
            finally:
                self.retrying -= 1
        if message is None:
            return
        sequence = document.state.sequence
        try:
            await self._store.append(
                document.draft_id, sequence, suggestions_payload(message, sequence)
            )
        except DependencyUnavailable:
            log.warning("suggestions for draft %s not logged: redis down", document.draft_id)

    async def _retry_until_answered(
        self, document: DraftDocument
    ) -> draft_pb.SuggestionsUpdated | None:
        """Ask again with jittered backoff while the draft stands where it was, for at most the
        retry window (an abandoned draft must not keep a task alive for its whole lifetime)."""
        delay = self._retry[0]
        sequence = document.state.sequence
        give_up = time.monotonic() + self._retry_window
        while time.monotonic() < give_up:
            await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
            delay = min(delay * 2, self._retry[1])
            # Retry only while the draft still stands where it was: a newer change (on any
            # replica) asks for its own suggestions.
            try:
                stored = await self._store.load(document.draft_id)
            except DependencyUnavailable:
                continue
            if stored is None or int(stored.document["state"]["sequence"]) != sequence:
                return None
            message = await self.compute(document)
            if message is not None:
                return message
        log.info("suggestions for draft %s: model still down, gave up", document.draft_id)
        return None

    async def _call(self, method: Any, request: Any) -> Any:
        return await method(request, metadata=await self._metadata(), timeout=self._timeout)

    async def _preferences(self, user_id: str) -> user_pb.Preferences | None:
        if self._users is None:
            return None
        try:
            response = await self._call(
                self._users.GetPreferences, user_pb.GetPreferencesRequest(user_id=user_id)
            )
        except grpc.aio.AioRpcError as error:
            log.info("preferences of %s unavailable (%s); not personalised", user_id, error.code())
            return None
        preferences: user_pb.Preferences = response.preferences
        return preferences

    async def default_bracket(self, user_id: str) -> SkillBracket | None:
        """The user's default bracket from their preferences; None if unset or unavailable."""
        preferences = await self._preferences(user_id)
        if preferences is None:
            return None
        return bracket_from_proto(preferences.default_skill_bracket)

    async def _suggest_picks(
        self, document: DraftDocument, side: Side, draft: common_pb2.DraftState
    ) -> Any:
        return await self._call(
            self._model.SuggestPicks, await self._pick_request(document, side, draft)
        )

    async def _pick_request(
        self, document: DraftDocument, side: Side, draft: common_pb2.DraftState
    ) -> model_pb.SuggestPicksRequest:
        request = model_pb.SuggestPicksRequest(
            draft=draft,
            side=side_to_proto(side),
            patch=document.state.patch,
            bracket=bracket_to_proto(document.room.bracket),
            limit=SUGGESTION_LIMIT,
        )
        captain = document.room.captain(side)
        if captain is None or captain.account_id is None:
            return request
        request.account_id = captain.account_id
        preferences = await self._preferences(captain.user_id)
        if preferences is None:
            return request
        disliked = set(preferences.disliked_hero_ids)
        pool = set(preferences.hero_pool_hero_ids) or (set(self._heroes) if disliked else set())
        request.candidate_hero_ids.extend(sorted(pool - disliked))
        if preferences.preferred_positions:
            request.position = preferences.preferred_positions[0]
        return request

    async def compute(self, document: DraftDocument) -> draft_pb.SuggestionsUpdated | None:
        """Picks, bans and the win probability for the draft's suggestion side; None when the
        model did not answer all three."""
        side = document.suggestion_side()
        if side is None:
            return None
        draft = state_to_proto(document.state)
        bracket = bracket_to_proto(document.room.bracket)
        patch = document.state.patch
        # All at once (the captain's preferences only hold up SuggestPicks); the first failure
        # cancels the others, since the message needs all three.
        try:
            async with asyncio.TaskGroup() as group:
                picks_task = group.create_task(self._suggest_picks(document, side, draft))
                bans_task = group.create_task(
                    self._call(
                        self._model.SuggestBans,
                        model_pb.SuggestBansRequest(
                            draft=draft,
                            side=side_to_proto(side),
                            patch=patch,
                            bracket=bracket,
                            limit=SUGGESTION_LIMIT,
                        ),
                    )
                )
                win_task = group.create_task(
                    self._call(
                        self._model.PredictWin,
                        model_pb.PredictWinRequest(draft=draft, patch=patch, bracket=bracket),
                    )
                )
        except ExceptionGroup as errors:
            failed = [e for e in errors.exceptions if isinstance(e, grpc.aio.AioRpcError)]
            if len(failed) != len(errors.exceptions):
                raise
            log.info("no suggestions for draft %s: model %s", document.draft_id, failed[0].code())
            return None
        picks, bans, win = picks_task.result(), bans_task.result(), win_task.result()
        radiant = float(win.radiant_win_probability)
        notes = [note for note in (picks.fallback_note, bans.fallback_note) if note]
        return draft_pb.SuggestionsUpdated(
            side=side_to_proto(side),
            picks=list(picks.suggestions),
            bans=list(bans.suggestions),
            win_probability=radiant if side is Side.RADIANT else 1.0 - radiant,
            model_version=picks.model_version,
            fallback_note="; ".join(dict.fromkeys(notes)),
        )

    async def predict_final(self, document: DraftDocument) -> FinalPrediction | None:
        """The finished draft's Radiant win probability; None when the model does not answer."""
        try:
            response = await self._call(
                self._model.PredictWin,
                model_pb.PredictWinRequest(
                    draft=state_to_proto(document.state),
                    patch=document.state.patch,
                    bracket=bracket_to_proto(document.room.bracket),
                ),
            )
        except grpc.aio.AioRpcError as error:
            log.info("no final prediction for draft %s: model %s", document.draft_id, error.code())
            return None
        return FinalPrediction(float(response.radiant_win_probability), response.model_version)
