"""The requesting player's hero pool and excluded heroes, from UserService, for SuggestPicks.

The model service asks as itself (its service token, services/common/service_tokens.py), the
way the draft service reads a captain's preferences. UserService being down or slow is an
expected failure: the answer is None and the suggestions go out without the pool.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.common.errors import DependencyUnavailable

log = logging.getLogger(__name__)

Metadata = tuple[tuple[str, str], ...]
# What UserService answers for a caller id that is not one of its users (a token minted for an
# id that is not a user UUID, or a deleted user).
_NOT_A_USER = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT})
MetadataProvider = Callable[[], Awaitable[Metadata]]


@dataclass(frozen=True)
class HeroPreferences:
    """The heroes a user plays and the heroes they never want suggested."""

    pool: frozenset[int] = frozenset()
    excluded: frozenset[int] = frozenset()


class UserPreferences:
    """Reads a user's hero preferences from UserService."""

    def __init__(
        self,
        open_channel: Callable[[], grpc.aio.Channel],
        metadata: MetadataProvider,
        *,
        timeout_seconds: float,
    ) -> None:
        self._open_channel = open_channel
        self._channel: grpc.aio.Channel | None = None
        self._metadata = metadata
        self._timeout = timeout_seconds

    async def open(self) -> None:
        """Open the channel (inside the server's event loop)."""
        self._channel = self._open_channel()

    async def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    async def heroes(self, user_id: str) -> HeroPreferences | None:
        """The user's pool and exclusions; empty when the user has none (or is unknown to
        UserService), None when UserService cannot answer."""
        if self._channel is None:
            return None
        stub = user_grpc.UserServiceStub(self._channel)
        try:
            metadata = await self._metadata()
        except DependencyUnavailable as error:  # auth could not give the service token
            log.info("preferences of %s unavailable (%s)", user_id, error)
            return None
        try:
            response = await stub.GetPreferences(
                user_pb.GetPreferencesRequest(user_id=user_id),
                metadata=metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _NOT_A_USER:
                return HeroPreferences()  # not a user of UserService: no preferences to apply
            log.warning("preferences of %s unavailable (%s)", user_id, error.code())
            return None
        preferences = response.preferences
        return HeroPreferences(
            pool=frozenset(preferences.hero_pool_hero_ids),
            excluded=frozenset(preferences.disliked_hero_ids),
        )
