"""Query resolvers: each calls one service RPC with the caller's token and the edge's deadline."""

from __future__ import annotations

import asyncio

import grpc
import strawberry

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as model_pb
from gateway.clients import ServiceHealth
from gateway.graphql.context import Context
from gateway.graphql.mesh import MeshService
from gateway.graphql.types import (
    ActionKind,
    Draft,
    Hero,
    Matchup,
    Me,
    ModelInfo,
    PersonalScore,
    Position,
    PositionAssignment,
    Side,
    SkillBracket,
    Suggestion,
    Suggestions,
    Synergy,
    hero_in,
)

Info = strawberry.Info[Context, None]


@strawberry.input(description="One pick or ban; its order is its index in the list.")
class DraftActionInput:
    kind: ActionKind
    side: Side
    hero_id: int


@strawberry.input(description="A draft's picks and bans so far, in order.")
class DraftStateInput:
    actions: list[DraftActionInput]

    def to_pb(self) -> c.DraftState:
        return c.DraftState(
            actions=[
                c.DraftAction(
                    order=i,
                    kind=c.DraftActionKind.ValueType(a.kind.value),
                    side=c.TeamSide.ValueType(a.side.value),
                    hero_id=a.hero_id,
                )
                for i, a in enumerate(self.actions)
            ]
        )


def _bracket(bracket: SkillBracket | None) -> c.SkillBracket.ValueType:
    return c.SkillBracket.ValueType(bracket.value if bracket else 0)


def _page(limit: int | None) -> c.PageRequest:
    return c.PageRequest(page_size=limit or 0)


async def resolve_mesh(info: Info) -> list[MeshService]:
    health: list[ServiceHealth] = await info.context.clients.mesh_health()
    services = [MeshService.from_internal(h) for h in health]
    if not await info.context.is_operator():
        for service in services:
            service.address = None
    return services


async def resolve_heroes(info: Info) -> list[Hero]:
    return await info.context.catalog.ordered(info.context.token)


async def resolve_hero(info: Info, id: int) -> Hero | None:
    return (await info.context.catalog.heroes(info.context.token)).get(id)


async def resolve_matchups(
    info: Info,
    *,
    hero_id: int,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
    limit: int | None = None,
    min_games: int | None = None,
) -> list[Matchup]:
    response = await info.context.clients.get_matchups(
        model_pb.GetMatchupsRequest(
            hero_id=hero_id,
            patch=patch or "",
            bracket=_bracket(bracket),
            page=_page(limit),
            min_games=min_games or 0,
        ),
        info.context.token,
    )
    return [Matchup.from_pb(row) for row in response.matchups]


async def resolve_synergies(
    info: Info,
    *,
    hero_id: int,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
    limit: int | None = None,
    min_games: int | None = None,
) -> list[Synergy]:
    response = await info.context.clients.get_synergies(
        model_pb.GetSynergiesRequest(
            hero_id=hero_id,
            patch=patch or "",
            bracket=_bracket(bracket),
            page=_page(limit),
            min_games=min_games or 0,
        ),
        info.context.token,
    )
    return [Synergy.from_pb(row) for row in response.synergies]


async def resolve_suggest_picks(
    info: Info,
    *,
    draft: DraftStateInput,
    side: Side,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
    limit: int | None = None,
    account_id: int | None = None,
    position: Position | None = None,
) -> Suggestions:
    response = await info.context.clients.suggest_picks(
        model_pb.SuggestPicksRequest(
            draft=draft.to_pb(),
            side=c.TeamSide.ValueType(side.value),
            patch=patch or "",
            bracket=_bracket(bracket),
            limit=limit or 0,
            account_id=account_id,
            position=c.Position.ValueType(position.value) if position is not None else None,
        ),
        info.context.token,
    )
    # The catalog is cached for minutes: almost always a dict, no call.
    heroes = await info.context.hero_catalog()
    return Suggestions(
        side=side,
        picks=[Suggestion.from_pb(s, heroes) for s in response.suggestions],
        bans=[],
        win_probability=response.base_win_probability,
        model_version=response.model_version,
        fallback_note=response.fallback_note or None,
        assignment=[
            PositionAssignment(
                hero=hero_in(heroes, entry.hero_id),
                position=Position(entry.position),
                frequency=entry.frequency,
            )
            for entry in response.assignment
        ],
        open_positions=[Position(value) for value in response.open_positions],
    )


async def resolve_suggest_bans(
    info: Info,
    *,
    draft: DraftStateInput,
    side: Side,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
    limit: int | None = None,
) -> Suggestions:
    response = await info.context.clients.suggest_bans(
        model_pb.SuggestBansRequest(
            draft=draft.to_pb(),
            side=c.TeamSide.ValueType(side.value),
            patch=patch or "",
            bracket=_bracket(bracket),
            limit=limit or 0,
        ),
        info.context.token,
    )
    # The catalog is cached for minutes: almost always a dict, no call.
    heroes = await info.context.hero_catalog()
    return Suggestions(
        side=side,
        picks=[],
        bans=[Suggestion.from_pb(s, heroes) for s in response.suggestions],
        win_probability=1 - response.enemy_base_win_probability,
        model_version=response.model_version,
        fallback_note=response.fallback_note or None,
    )


async def resolve_predict_win(
    info: Info,
    *,
    draft: DraftStateInput,
    patch: str | None = None,
    bracket: SkillBracket | None = None,
) -> float:
    response = await info.context.clients.predict_win(
        model_pb.PredictWinRequest(
            draft=draft.to_pb(), patch=patch or "", bracket=_bracket(bracket)
        ),
        info.context.token,
    )
    return response.radiant_win_probability


async def resolve_personal_scores(
    info: Info, account_id: int, patch: str | None = None, limit: int | None = None
) -> list[PersonalScore]:
    response = await info.context.clients.personal_scores(
        model_pb.GetPersonalScoresRequest(account_id=account_id, patch=patch, page=_page(limit)),
        info.context.token,
    )
    return [PersonalScore.from_pb(row) for row in response.scores]


async def resolve_model_info(info: Info) -> ModelInfo:
    return ModelInfo.from_pb(await info.context.clients.model_info(info.context.token))


async def resolve_me(info: Info) -> Me | None:
    if info.context.token is None:
        return None
    caller, profile = await asyncio.gather(
        info.context.caller("me"), info.context.clients.get_profile(info.context.token)
    )
    return Me.from_pb(profile.profile, sorted(caller.roles))


async def resolve_draft(info: Info, id: strawberry.ID) -> Draft | None:
    try:
        response = await info.context.clients.get_draft(str(id), info.context.token)
    except grpc.aio.AioRpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise
    return Draft.from_pb(response.draft)


@strawberry.type
class Query:
    mesh: list[MeshService] = strawberry.field(
        resolver=resolve_mesh,
        description="Health of every backend service, checked live over gRPC.",
    )

    heroes: list[Hero] = strawberry.field(
        resolver=resolve_heroes, description="Every hero of the current patch (cached by the edge)."
    )

    hero: Hero | None = strawberry.field(
        resolver=resolve_hero, description="One hero by Valve id; null if unknown."
    )

    matchups: list[Matchup] = strawberry.field(
        resolver=resolve_matchups, description="How a hero fares against each enemy hero."
    )

    synergies: list[Synergy] = strawberry.field(
        resolver=resolve_synergies, description="How a hero fares with each allied hero."
    )

    suggest_picks: Suggestions = strawberry.field(
        resolver=resolve_suggest_picks,
        description="Heroes to pick next for `side`, with reasons in words.",
    )

    suggest_bans: Suggestions = strawberry.field(
        resolver=resolve_suggest_bans,
        description="Heroes for `side` to ban next: the enemy's best picks (their win "
        "probabilities are the enemy's).",
    )

    predict_win: float = strawberry.field(
        resolver=resolve_predict_win,
        description="Radiant's win probability for a draft, in [0, 1].",
    )

    personal_scores: list[PersonalScore] = strawberry.field(
        resolver=resolve_personal_scores,
        description="A player's Personal Advantage Scores (needs a token).",
    )

    model_info: ModelInfo = strawberry.field(
        resolver=resolve_model_info,
        description="The model version, its quality and the data behind it.",
    )

    me: Me | None = strawberry.field(
        resolver=resolve_me, description="The signed-in caller; null for an anonymous one."
    )

    draft: Draft | None = strawberry.field(
        resolver=resolve_draft,
        description="A draft by id (needs a token); null if it does not exist.",
    )
