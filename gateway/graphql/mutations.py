"""Mutation resolvers. The services decide who may do what (their `access` rules and ownership
checks); the edge forwards the caller's token and maps refusals (errors.py)."""

from __future__ import annotations

import strawberry
from google.protobuf import field_mask_pb2

from counterpick.auth.v1 import auth_service_pb2 as auth_pb
from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from counterpick.user.v1 import user_service_pb2 as user_pb
from gateway.graphql.context import Context
from gateway.graphql.errors import bad_input
from gateway.graphql.queries import DraftActionInput
from gateway.graphql.types import (
    ApiKey,
    CreatedApiKey,
    CreatedDraft,
    CreatorSeat,
    Draft,
    DraftMode,
    JoinedDraft,
    Me,
    Position,
    Preferences,
    Side,
    SkillBracket,
)

Info = strawberry.Info[Context, None]


@strawberry.input(description="Preference fields to change; omitted fields stay as they are.")
class PreferencesInput:
    preferred_positions: list[Position] | None = None
    hero_pool_hero_ids: list[int] | None = None
    favourite_hero_ids: list[int] | None = None
    disliked_hero_ids: list[int] | None = None
    default_skill_bracket: SkillBracket | None = None


def _side(side: Side | None) -> c.TeamSide.ValueType | None:
    return c.TeamSide.ValueType(side.value) if side is not None else None


async def resolve_create_draft(
    info: Info,
    *,
    mode: DraftMode,
    first_pick_side: Side,
    our_side: Side | None = None,
    creator_seat: CreatorSeat | None = None,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
    timers: bool | None = None,
    mirror: bool | None = None,
) -> CreatedDraft:
    if mirror:
        raise bad_input("mirror drafts are created through the GSI setup, not createDraft")
    request = draft_pb.CreateDraftRequest(
        mode=c.DraftMode.ValueType(mode.value),
        patch=patch or "",
        bracket=c.SkillBracket.ValueType(bracket.value if bracket else 0),
        our_side=_side(our_side),
        first_pick_side=c.TeamSide.ValueType(first_pick_side.value),
        creator_seat=draft_pb.CreatorSeat.ValueType(creator_seat.value if creator_seat else 0),
    )
    if timers:
        request.timers.SetInParent()  # set, with no field set: the mode's times
    response = await info.context.clients.create_draft(request, info.context.token)
    return CreatedDraft(
        draft=Draft.from_pb(response.draft),
        invite_code=response.invite_code or None,
        gsi_token=None,
    )


async def resolve_join_draft(info: Info, id: strawberry.ID, invite_code: str) -> JoinedDraft:
    response = await info.context.clients.join_draft(
        draft_pb.JoinDraftRequest(draft_id=str(id), invite_code=invite_code),
        info.context.token,
    )
    return JoinedDraft(draft=Draft.from_pb(response.draft), side=Side(response.side))


async def resolve_submit_draft_action(
    info: Info,
    *,
    id: strawberry.ID,
    action: DraftActionInput,
    expected_sequence: int | None = None,
) -> Draft:
    response = await info.context.clients.submit_action(
        draft_pb.SubmitActionRequest(
            draft_id=str(id),
            action=c.DraftAction(
                kind=c.DraftActionKind.ValueType(action.kind.value),
                side=c.TeamSide.ValueType(action.side.value),
                hero_id=action.hero_id,
            ),
            expected_sequence=expected_sequence,
        ),
        info.context.token,
    )
    return Draft.from_pb(response.draft)


async def resolve_update_profile(
    info: Info,
    *,
    persona_name: str | None = None,
    avatar_url: str | None = None,
    expected_version: int | None = None,
) -> Me:
    paths = [
        name
        for name, value in (("persona_name", persona_name), ("avatar_url", avatar_url))
        if value is not None
    ]
    if not paths:
        raise bad_input("give personaName or avatarUrl")
    caller = await info.context.caller("updateProfile")
    response = await info.context.clients.update_profile(
        user_pb.UpdateProfileRequest(
            persona_name=persona_name,
            avatar_url=avatar_url,
            expected_version=expected_version,
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        ),
        info.context.token,
    )
    return Me.from_pb(response.profile, sorted(caller.roles))


async def resolve_update_preferences(
    info: Info, preferences: PreferencesInput, expected_version: int | None = None
) -> Preferences:
    values = {
        "preferred_positions": [p.value for p in preferences.preferred_positions]
        if preferences.preferred_positions is not None
        else None,
        "hero_pool_hero_ids": preferences.hero_pool_hero_ids,
        "favourite_hero_ids": preferences.favourite_hero_ids,
        "disliked_hero_ids": preferences.disliked_hero_ids,
        "default_skill_bracket": preferences.default_skill_bracket.value
        if preferences.default_skill_bracket is not None
        else None,
    }
    given = {k: v for k, v in values.items() if v is not None}
    if not given:
        raise bad_input("give at least one preference to change")
    response = await info.context.clients.update_preferences(
        user_pb.UpdatePreferencesRequest(
            preferences=user_pb.Preferences(**given),  # type: ignore[arg-type]
            expected_version=expected_version,
            update_mask=field_mask_pb2.FieldMask(paths=sorted(given)),
        ),
        info.context.token,
    )
    return Preferences.from_pb(response.preferences)


async def resolve_create_api_key(info: Info, name: str, scopes: list[str]) -> CreatedApiKey:
    response = await info.context.clients.create_api_key(
        auth_pb.CreateApiKeyRequest(name=name, scopes=scopes), info.context.token
    )
    return CreatedApiKey(api_key=ApiKey.from_pb(response.api_key), secret=response.secret)


async def resolve_revoke_api_key(info: Info, id: strawberry.ID) -> ApiKey:
    response = await info.context.clients.revoke_api_key(str(id), info.context.token)
    return ApiKey.from_pb(response.api_key)


async def resolve_logout(info: Info) -> bool:
    caller = await info.context.caller("logout")
    response = await info.context.clients.revoke_token(
        auth_pb.RevokeTokenRequest(access_token_jti=caller.jti), info.context.token
    )
    return response.revoked_count > 0


@strawberry.type
class Mutation:
    create_draft: CreatedDraft = strawberry.mutation(
        resolver=resolve_create_draft,
        description="Open a draft room; the creator takes the seat(s) asked.",
    )

    join_draft: JoinedDraft = strawberry.mutation(
        resolver=resolve_join_draft,
        description="Take the free seat of a draft with its invite code.",
    )

    submit_draft_action: Draft = strawberry.mutation(
        resolver=resolve_submit_draft_action,
        description="Pick or ban. With expectedSequence, a stale view is refused with "
        "VERSION_MISMATCH instead of acting on a step the caller did not see.",
    )

    update_profile: Me = strawberry.mutation(
        resolver=resolve_update_profile, description="Change the caller's display name or avatar."
    )

    update_preferences: Preferences = strawberry.mutation(
        resolver=resolve_update_preferences, description="Change the caller's draft preferences."
    )

    create_api_key: CreatedApiKey = strawberry.mutation(
        resolver=resolve_create_api_key,
        description="Create an API key for a bot; the secret is shown once.",
    )

    revoke_api_key: ApiKey = strawberry.mutation(
        resolver=resolve_revoke_api_key, description="Revoke one of the caller's API keys."
    )

    logout: bool = strawberry.mutation(
        resolver=resolve_logout,
        description="Revoke the access token of this request (its refresh cookie is the web "
        "login's to clear). True when a token was revoked.",
    )
