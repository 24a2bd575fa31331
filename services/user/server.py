"""gRPC wiring of the user service: protobuf in, access and domain checks, storage, protobuf out.

Every call is counted against its caller's quota first (the server's rate-limit interceptor),
then must carry a valid access token; which user it addresses and whether the caller may do so is
decided in `profiles` before the database is touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

from counterpick.common.v1 import common_pb2
from counterpick.user.v1 import user_service_pb2 as pb
from counterpick.user.v1 import user_service_pb2_grpc as pb_grpc
from services.common.dota import SkillBracket
from services.common.dota_constants import load_constants
from services.common.dota_proto import bracket_from_proto, bracket_to_proto
from services.common.errors import InvalidArgument
from services.common.rate_limit import rate_limiter_from_settings
from services.common.server import GrpcServer, registration
from services.common.timestamps import to_timestamp as _timestamp
from services.common.tokens import KeySource, require_caller, verifier_from_settings
from services.user.config import UserSettings
from services.user.profiles import (
    SERVICE_ROLE,
    Access,
    PreferenceField,
    Preferences,
    Profile,
    Subscription,
    Tier,
    preferences_update,
    profile_update,
    resolve_target,
    steam_identity,
)
from services.user.runtime import UserRuntime

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["UserService"].full_name

_TIER_PROTO: dict[Tier, common_pb2.SubscriptionTier.ValueType] = {
    Tier.FREE: common_pb2.SUBSCRIPTION_TIER_FREE,
    Tier.PLUS: common_pb2.SUBSCRIPTION_TIER_PLUS,
    Tier.PRO: common_pb2.SUBSCRIPTION_TIER_PRO,
}


def _preferences_pb(preferences: Preferences) -> pb.Preferences:
    message = pb.Preferences(
        preferred_positions=[
            common_pb2.Position.ValueType(position) for position in preferences.preferred_positions
        ],
        hero_pool_hero_ids=preferences.hero_pool_hero_ids,
        favourite_hero_ids=preferences.favourite_hero_ids,
        disliked_hero_ids=preferences.disliked_hero_ids,
        default_skill_bracket=bracket_to_proto(preferences.default_skill_bracket),
        version=preferences.version,
    )
    if preferences.updated_at is not None:
        message.updated_at.CopyFrom(_timestamp(preferences.updated_at))
    return message


def _subscription_pb(subscription: Subscription) -> pb.Subscription:
    message = pb.Subscription(tier=_TIER_PROTO[subscription.tier])
    for name in ("started_at", "renews_at", "expires_at"):
        moment: datetime | None = getattr(subscription, name)
        if moment is not None:
            getattr(message, name).CopyFrom(_timestamp(moment))
    return message


def _profile_pb(profile: Profile, now: datetime) -> pb.Profile:
    return pb.Profile(
        user_id=str(profile.user_id),
        steamid64=profile.steamid64,
        account_id=profile.account_id,
        persona_name=profile.persona_name,
        avatar_url=profile.avatar_url,
        created_at=_timestamp(profile.created_at),
        last_login_at=_timestamp(profile.last_login_at),
        tier=_TIER_PROTO[profile.subscription.effective(now).tier],
        preferences=_preferences_pb(profile.preferences),
        version=profile.version,
    )


def _bracket(number: int) -> SkillBracket | None:
    """The chosen default bracket; None (all) for UNSPECIFIED, INVALID_ARGUMENT for a number the
    contract does not define."""
    if number == common_pb2.SKILL_BRACKET_UNSPECIFIED:
        return None
    bracket = bracket_from_proto(number)
    if bracket is None:
        raise InvalidArgument(
            f"default_skill_bracket {number} is not a known skill bracket",
            field="preferences.default_skill_bracket",
        )
    return bracket


class UserServicer(pb_grpc.UserServiceServicer):
    """counterpick.user.v1.UserService."""

    def __init__(
        self,
        runtime: UserRuntime,
        heroes: Collection[int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._heroes = heroes
        self._clock = clock

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Any
    ) -> pb.GetProfileResponse:
        caller = require_caller()
        user_id = resolve_target(caller, request.user_id, Access.READ)
        profile = await self._runtime.repository.get_profile(user_id)
        return pb.GetProfileResponse(profile=_profile_pb(profile, self._clock()))

    async def UpdateProfile(
        self, request: pb.UpdateProfileRequest, context: Any
    ) -> pb.UpdateProfileResponse:
        caller = require_caller()
        user_id = resolve_target(caller, request.user_id, Access.WRITE)
        update = profile_update(
            list(request.update_mask.paths),
            request.persona_name if request.HasField("persona_name") else None,
            request.avatar_url if request.HasField("avatar_url") else None,
        )
        expected = request.expected_version if request.HasField("expected_version") else None
        profile = await self._runtime.repository.update_profile(user_id, update, expected)
        return pb.UpdateProfileResponse(profile=_profile_pb(profile, self._clock()))

    async def GetPreferences(
        self, request: pb.GetPreferencesRequest, context: Any
    ) -> pb.GetPreferencesResponse:
        caller = require_caller()
        user_id = resolve_target(caller, request.user_id, Access.READ)
        preferences = await self._runtime.repository.get_preferences(user_id)
        return pb.GetPreferencesResponse(preferences=_preferences_pb(preferences))

    async def UpdatePreferences(
        self, request: pb.UpdatePreferencesRequest, context: Any
    ) -> pb.UpdatePreferencesResponse:
        caller = require_caller()
        user_id = resolve_target(caller, request.user_id, Access.WRITE)
        paths = list(request.update_mask.paths)
        values = request.preferences
        bracket_chosen = not paths or PreferenceField.DEFAULT_SKILL_BRACKET.value in paths
        update = preferences_update(
            paths,
            preferred_positions=list(values.preferred_positions),
            hero_pool_hero_ids=list(values.hero_pool_hero_ids),
            favourite_hero_ids=list(values.favourite_hero_ids),
            disliked_hero_ids=list(values.disliked_hero_ids),
            default_skill_bracket=(
                _bracket(values.default_skill_bracket) if bracket_chosen else None
            ),
            heroes=self._heroes,
        )
        expected = request.expected_version if request.HasField("expected_version") else None
        preferences = await self._runtime.repository.update_preferences(user_id, update, expected)
        return pb.UpdatePreferencesResponse(preferences=_preferences_pb(preferences))

    async def GetSubscription(
        self, request: pb.GetSubscriptionRequest, context: Any
    ) -> pb.GetSubscriptionResponse:
        caller = require_caller()
        user_id = resolve_target(caller, request.user_id, Access.READ)
        subscription = await self._runtime.repository.get_subscription(user_id)
        return pb.GetSubscriptionResponse(
            subscription=_subscription_pb(subscription.effective(self._clock()))
        )

    async def UpsertSteamUser(
        self, request: pb.UpsertSteamUserRequest, context: Any
    ) -> pb.UpsertSteamUserResponse:
        require_caller(SERVICE_ROLE)
        identity = steam_identity(request.steamid64, request.persona_name, request.avatar_url)
        profile, created = await self._runtime.repository.upsert_steam_user(identity)
        return pb.UpsertSteamUserResponse(
            profile=_profile_pb(profile, self._clock()), created=created
        )


def build_server(settings: UserSettings, key_source: KeySource | None = None) -> GrpcServer:
    """The user server: stores opened (and the schema migrated) on start, closed on stop.

    Tokens are verified against the auth service's published keys unless `key_source` is given.
    """
    runtime = UserRuntime(settings)
    verifier = verifier_from_settings(settings, key_source)
    servicer = UserServicer(runtime, frozenset(load_constants().heroes))
    return GrpcServer(
        name="user",
        settings=settings,
        services=[registration(servicer, pb_grpc.add_UserServiceServicer_to_server, SERVICE_NAME)],
        on_start=[runtime.open],
        on_stop=[runtime.close],
        verifier=verifier,
        # Counted per caller before any RPC runs; anonymous calls too, per address, although
        # every user RPC then refuses them, so probing without a token is throttled as well.
        rate_limiter=rate_limiter_from_settings(settings, settings.redis_url, "user"),
    )
