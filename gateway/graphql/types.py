"""The GraphQL types of the edge, converted explicitly from the services' protobuf messages.

Names and shapes follow the contract the page codes against (camelCase, enums named as the proto
values without their prefix). Heroes are resolved through the request's DataLoader, so a draft
with ten actions and three suggestion lists costs one ListHeroes (usually none: it is cached);
suggestions, the hot path, are built whole from the cached catalog (see `Suggestion`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from enum import Enum
from typing import TYPE_CHECKING

import strawberry
from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.auth.v1 import auth_service_pb2 as auth_pb
from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.user.v1 import user_service_pb2 as user_pb

if TYPE_CHECKING:
    from gateway.graphql.context import Context

IMAGE_HOST = "https://cdn.cloudflare.steamstatic.com"


def iso(timestamp: Timestamp) -> str:
    """An RFC 3339 UTC time."""
    return timestamp.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def iso_or_none(message: object, field: str) -> str | None:
    """`iso` of an optional Timestamp field, None when unset or zero."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    value: Timestamp = getattr(message, field)
    return iso(value) if value.seconds or value.nanos else None


# -- enums -------------------------------------------------------------------------------------


@strawberry.enum(description="Draft mode (common.v1.DraftMode).")
class DraftMode(Enum):
    CAPTAINS_MODE = c.DRAFT_MODE_CAPTAINS_MODE
    ALL_PICK_RANKED = c.DRAFT_MODE_ALL_PICK_RANKED


@strawberry.enum(description="Team side (common.v1.TeamSide).")
class Side(Enum):
    RADIANT = c.TEAM_SIDE_RADIANT
    DIRE = c.TEAM_SIDE_DIRE


@strawberry.enum(description="Pick or ban (common.v1.DraftActionKind).")
class ActionKind(Enum):
    PICK = c.DRAFT_ACTION_KIND_PICK
    BAN = c.DRAFT_ACTION_KIND_BAN


@strawberry.enum(description="Skill bracket (common.v1.SkillBracket).")
class SkillBracket(Enum):
    ALL = c.SKILL_BRACKET_ALL
    HERALD_GUARDIAN = c.SKILL_BRACKET_HERALD_GUARDIAN
    CRUSADER_ARCHON = c.SKILL_BRACKET_CRUSADER_ARCHON
    LEGEND_ANCIENT = c.SKILL_BRACKET_LEGEND_ANCIENT
    DIVINE_IMMORTAL = c.SKILL_BRACKET_DIVINE_IMMORTAL


@strawberry.enum(description="Which seats the creator of a draft takes (draft.v1.CreatorSeat).")
class CreatorSeat(Enum):
    BOTH = draft_pb.CREATOR_SEAT_BOTH
    OUR_SIDE = draft_pb.CREATOR_SEAT_OUR_SIDE


@strawberry.enum(description="Position in the team (common.v1.Position).")
class Position(Enum):
    CARRY = c.POSITION_CARRY
    MID = c.POSITION_MID
    OFFLANE = c.POSITION_OFFLANE
    SOFT_SUPPORT = c.POSITION_SOFT_SUPPORT
    HARD_SUPPORT = c.POSITION_HARD_SUPPORT


def side_or_none(value: int) -> Side | None:
    """The Side of a proto TeamSide, None for UNSPECIFIED."""
    return Side(value) if value in (c.TEAM_SIDE_RADIANT, c.TEAM_SIDE_DIRE) else None


def bracket_of(value: int) -> SkillBracket:
    """UNSPECIFIED reads as ALL (as the services treat it)."""
    return SkillBracket(value) if value else SkillBracket.ALL


# -- heroes ------------------------------------------------------------------------------------


@strawberry.type(description="A playable hero, with its base win rate in the current patch.")
class Hero:
    id: int
    name: str = strawberry.field(description='Internal name, e.g. "npc_dota_hero_antimage".')
    localized_name: str = strawberry.field(description='Display name, e.g. "Anti-Mage".')
    primary_attribute: str = strawberry.field(
        description="strength, agility, intelligence or universal."
    )
    attack_type: str = strawberry.field(description="melee or ranged.")
    roles: list[str]
    image_url: str | None
    icon_url: str | None
    base_win_rate: float | None = strawberry.field(
        description="Win rate in the current patch, all brackets, in [0, 1]; null without data."
    )
    games: int = strawberry.field(description="Matches behind base_win_rate.")

    @classmethod
    def from_pb(cls, summary: model_pb.HeroSummary) -> Hero:
        """From a ListHeroes entry."""
        hero = summary.hero
        games = summary.stats.games
        return cls(
            id=hero.id,
            name=hero.name,
            localized_name=hero.localized_name,
            primary_attribute=c.PrimaryAttribute.Name(hero.primary_attribute)
            .removeprefix("PRIMARY_ATTRIBUTE_")
            .lower(),
            attack_type=c.AttackType.Name(hero.attack_type).removeprefix("ATTACK_TYPE_").lower(),
            roles=list(hero.roles),
            image_url=f"{IMAGE_HOST}{hero.image_path}" if hero.image_path else None,
            icon_url=f"{IMAGE_HOST}{hero.icon_path}" if hero.icon_path else None,
            base_win_rate=summary.stats.win_rate if games else None,
            games=games,
        )

    @classmethod
    def unknown(cls, hero_id: int) -> Hero:
        """A hero id the catalog does not know (a newer patch than the constants)."""
        return cls(
            id=hero_id,
            name="",
            localized_name=f"hero {hero_id}",
            primary_attribute="unspecified",
            attack_type="unspecified",
            roles=[],
            image_url=None,
            icon_url=None,
            base_win_rate=None,
            games=0,
        )


async def load_hero(info: strawberry.Info[Context, None], hero_id: int) -> Hero:
    """The hero through the request's DataLoader."""
    return await info.context.heroes.load(hero_id)


@strawberry.type(description="A value with its credible interval.")
class Interval:
    lower: float
    upper: float
    confidence_level: float

    @classmethod
    def from_pb(cls, interval: c.Interval) -> Interval:
        return cls(
            lower=interval.lower,
            upper=interval.upper,
            confidence_level=interval.confidence_level,
        )


async def _matchup_other_hero(self: Matchup, info: strawberry.Info[Context, None]) -> Hero:
    return await load_hero(info, self.other_hero_id)


@strawberry.type(description="How a hero fares against one enemy hero (model.v1.Matchup).")
class Matchup:
    other_hero_id: strawberry.Private[int]
    games: int
    wins: int
    win_rate: float
    shrunk_win_rate: float
    advantage: float = strawberry.field(
        description="Advantage in win-rate points as a fraction (0.021 = +2.1 points)."
    )
    advantage_interval: Interval

    other_hero: Hero = strawberry.field(resolver=_matchup_other_hero, description="The enemy hero.")

    @classmethod
    def from_pb(cls, row: model_pb.Matchup) -> Matchup:
        return cls(
            other_hero_id=row.other_hero_id,
            games=row.games,
            wins=row.wins,
            win_rate=row.win_rate,
            shrunk_win_rate=row.shrunk_win_rate,
            advantage=row.advantage,
            advantage_interval=Interval.from_pb(row.advantage_interval),
        )


async def _synergy_ally_hero(self: Synergy, info: strawberry.Info[Context, None]) -> Hero:
    return await load_hero(info, self.ally_hero_id)


@strawberry.type(description="How a hero fares with one allied hero (model.v1.Synergy).")
class Synergy:
    ally_hero_id: strawberry.Private[int]
    games: int
    wins: int
    win_rate: float
    shrunk_win_rate: float
    synergy: float = strawberry.field(
        description="Synergy in win-rate points as a fraction (0.01 = +1 point)."
    )
    synergy_interval: Interval

    ally_hero: Hero = strawberry.field(resolver=_synergy_ally_hero, description="The allied hero.")

    @classmethod
    def from_pb(cls, row: model_pb.Synergy) -> Synergy:
        return cls(
            ally_hero_id=row.ally_hero_id,
            games=row.games,
            wins=row.wins,
            win_rate=row.win_rate,
            shrunk_win_rate=row.shrunk_win_rate,
            synergy=row.synergy,
            synergy_interval=Interval.from_pb(row.synergy_interval),
        )


@strawberry.type(description="A player's record on one hero (model.v1.PersonalScore).")
class PersonalScore:
    hero_id: strawberry.Private[int]
    games: int
    wins: int
    win_rate: float
    expected_win_rate: float
    pas: float = strawberry.field(description="Personal Advantage Score, in win-rate points.")
    last_played_at: str | None

    @strawberry.field
    async def hero(self, info: strawberry.Info[Context, None]) -> Hero:
        return await load_hero(info, self.hero_id)

    @classmethod
    def from_pb(cls, row: model_pb.PersonalScore) -> PersonalScore:
        return cls(
            hero_id=row.hero_id,
            games=row.games,
            wins=row.wins,
            win_rate=row.win_rate,
            expected_win_rate=row.expected_win_rate,
            pas=row.pas,
            last_played_at=iso_or_none(row, "last_played_at"),
        )


@strawberry.type(description="Quality of the win-prediction model on held-out matches.")
class ModelQuality:
    log_loss: float
    accuracy: float
    roc_auc: float
    ece: float
    brier_score: float
    evaluated_on: str
    evaluation_matches: int


@strawberry.type(description="The model and statistics snapshot the answers come from.")
class ModelInfo:
    model_version: str
    trained_at: str | None
    matches_used: int
    current_patch: str
    patches: list[str]
    snapshot_version: int
    snapshot_computed_at: str | None
    quality: ModelQuality

    @classmethod
    def from_pb(cls, info: model_pb.GetModelInfoResponse) -> ModelInfo:
        q = info.quality
        return cls(
            model_version=info.model_version,
            trained_at=iso_or_none(info, "trained_at"),
            matches_used=info.matches_used,
            current_patch=info.current_patch.name,
            patches=[p.name for p in info.patches],
            snapshot_version=info.snapshot.version,
            snapshot_computed_at=iso_or_none(info.snapshot, "computed_at"),
            quality=ModelQuality(
                log_loss=q.log_loss,
                accuracy=q.accuracy,
                roc_auc=q.roc_auc,
                ece=q.ece,
                brier_score=q.brier_score,
                evaluated_on=q.evaluated_on,
                evaluation_matches=q.evaluation_matches,
            ),
        )


# -- suggestions -------------------------------------------------------------------------------


def points(value: float) -> str:
    """Win-rate points as a fraction -> "+2.1", "-0.4", "+4" (no trailing .0)."""
    text = f"{value * 100:+.1f}"
    return text.removesuffix(".0")


def games_note(games: int) -> str:
    return f" ({games} games)" if games else ""


def reason_text(term: model_pb.SuggestionTerm, hero: str, other: str | None) -> str:
    """One term of a suggestion in words, e.g. "+2.1 pts vs Anti-Mage (429 games)"."""
    pts = points(term.value)
    match term.kind:
        case model_pb.TERM_KIND_MATCHUP:
            return f"{pts} pts vs {other}{games_note(term.games)}"
        case model_pb.TERM_KIND_SYNERGY:
            return f"{pts} pts with {other}{games_note(term.games)}"
        case model_pb.TERM_KIND_PERSONAL:
            return f"your {hero}: {pts} pts{games_note(term.games)}"
        case model_pb.TERM_KIND_POSITION_FIT:
            return f"fits the position: {pts} pts{games_note(term.games)}"
        case model_pb.TERM_KIND_HERO_STRENGTH:
            return f"{hero} in this patch: {pts} pts{games_note(term.games)}"
        case _:
            return f"{pts} pts"


@strawberry.type(description="One reason behind a suggestion, in words and in numbers.")
class Reason:
    kind: str = strawberry.field(
        description="hero_strength, matchup, synergy, personal or position_fit."
    )
    text: str = strawberry.field(description='e.g. "+2.1 pts vs Anti-Mage (429 games)".')
    value: float = strawberry.field(description="Contribution in win-rate points (2.1 = +2.1).")
    games: int
    other_hero_id: int | None


def hero_in(heroes: Mapping[int, Hero], hero_id: int) -> Hero:
    """The hero of the catalog `heroes`, or a placeholder for an id it does not know."""
    return heroes.get(hero_id) or Hero.unknown(hero_id)


def suggestion_reasons(suggestion: model_pb.Suggestion, heroes: Mapping[int, Hero]) -> list[Reason]:
    """The model's terms for a suggestion in words, strongest first."""
    terms = sorted(suggestion.terms, key=lambda t: abs(t.value), reverse=True)
    hero = hero_in(heroes, suggestion.hero_id).localized_name
    reasons = []
    for t in terms:
        other = t.other_hero_id if t.HasField("other_hero_id") else None
        reasons.append(
            Reason(
                kind=model_pb.TermKind.Name(t.kind).removeprefix("TERM_KIND_").lower(),
                text=reason_text(
                    t, hero, hero_in(heroes, other).localized_name if other is not None else None
                ),
                value=round(t.value * 100, 3),
                games=t.games,
                other_hero_id=other,
            )
        )
    return reasons


@strawberry.type(description="A hero suggested for a pick or a ban, with its reasons.")
class Suggestion:
    """Built whole from the model's answer and the hero catalog: no field of a suggestion is
    resolved on its own. With per-field async resolvers (a DataLoader for each hero, the reasons
    awaiting it too) a list of ten suggestions cost twenty coroutines, ten gathered tasks and a
    DataLoader batch, about half of the edge's CPU for suggestPicks (bench.edge)."""

    score: float = strawberry.field(description="Ranking key in win-rate points; higher first.")
    win_probability: float = strawberry.field(
        description="Win probability of the picking side after this hero (ours for picks, the "
        "enemy's for bans), in [0, 1]."
    )
    win_probability_delta: float
    games: int
    reasons: list[Reason] = strawberry.field(
        description="The model's explanation, strongest first."
    )
    hero: Hero
    in_hero_pool: bool = strawberry.field(
        default=False,
        description="The hero is in the player's hero pool (suggestPicks with accountId).",
    )

    @classmethod
    def from_pb(cls, suggestion: model_pb.Suggestion, heroes: Mapping[int, Hero]) -> Suggestion:
        """From the model's suggestion, naming heroes from the catalog `heroes`."""
        return cls(
            hero=hero_in(heroes, suggestion.hero_id),
            score=suggestion.score,
            win_probability=suggestion.win_probability,
            win_probability_delta=suggestion.win_probability_delta,
            games=suggestion.games,
            reasons=suggestion_reasons(suggestion, heroes),
            in_hero_pool=suggestion.in_hero_pool,
        )


@strawberry.type(
    description="Where one picked hero most likely plays (model.v1.PositionAssignment)."
)
class PositionAssignment:
    hero: Hero
    position: Position
    frequency: float = strawberry.field(
        description="How often the hero plays that position in the patch, 0..1."
    )


@strawberry.type(description="Pick and ban suggestions for one side.")
class Suggestions:
    side: Side
    picks: list[Suggestion]
    bans: list[Suggestion]
    win_probability: float = strawberry.field(
        description="The side's win probability for the draft so far, before its next pick."
    )
    model_version: str
    fallback_note: str | None
    assignment: list[PositionAssignment] = strawberry.field(
        default_factory=list,
        description="suggestPicks: where the side's picks most likely play (one per pick).",
    )
    open_positions: list[Position] = strawberry.field(
        default_factory=list,
        description="suggestPicks: positions the side still lacks; ask again with `position`.",
    )

    @classmethod
    def from_update(
        cls, update: draft_pb.SuggestionsUpdated, heroes: Mapping[int, Hero]
    ) -> Suggestions:
        return cls(
            side=Side(update.side),
            picks=[Suggestion.from_pb(s, heroes) for s in update.picks],
            bans=[Suggestion.from_pb(s, heroes) for s in update.bans],
            win_probability=update.win_probability,
            model_version=update.model_version,
            fallback_note=update.fallback_note or None,
        )


# -- drafts ------------------------------------------------------------------------------------


@strawberry.type(description="A pick or ban that happened.")
class DraftAction:
    order: int
    kind: ActionKind
    side: Side
    hero_id: int
    timed_out: bool

    @strawberry.field
    async def hero(self, info: strawberry.Info[Context, None]) -> Hero:
        return await load_hero(info, self.hero_id)

    @classmethod
    def from_pb(cls, action: c.DraftAction, timed_out: bool = False) -> DraftAction:
        return cls(
            order=action.order,
            kind=ActionKind(action.kind),
            side=Side(action.side),
            hero_id=action.hero_id,
            timed_out=timed_out,
        )


@strawberry.type(description="The action the draft waits for.")
class ExpectedAction:
    order: int
    kind: ActionKind
    side: Side
    deadline: str | None

    @classmethod
    def from_pb(cls, expected: draft_pb.ExpectedAction) -> ExpectedAction | None:
        if not expected.kind:
            return None
        return cls(
            order=expected.order,
            kind=ActionKind(expected.kind),
            side=Side(expected.side),
            deadline=iso_or_none(expected, "deadline"),
        )


@strawberry.type(description="A seat's captain.")
class Captain:
    user_id: str
    account_id: int | None

    @classmethod
    def from_pb(cls, captain: draft_pb.Captain) -> Captain | None:
        if not captain.user_id:
            return None
        return cls(
            user_id=captain.user_id,
            account_id=captain.account_id if captain.HasField("account_id") else None,
        )


async def _draft_suggestions(
    self: Draft, info: strawberry.Info[Context, None]
) -> Suggestions | None:
    if self.completed or self.next_action is None:
        return None
    return await info.context.draft_suggestions(self.source, self.next_action.side.value)


@strawberry.type(description="A draft room.")
class Draft:
    source: strawberry.Private[draft_pb.Draft]
    id: strawberry.ID
    mode: DraftMode
    patch: str
    bracket: SkillBracket
    first_pick_side: Side
    our_side: Side | None
    sequence: int
    completed: bool
    actions: list[DraftAction]
    next_action: ExpectedAction | None
    radiant_captain: Captain | None
    dire_captain: Captain | None
    created_at: str
    updated_at: str
    expires_at: str

    suggestions: Suggestions | None = strawberry.field(
        resolver=_draft_suggestions,
        description="Live suggestions for the side to act next (null once completed). Costs a "
        "model call: ask for it only where shown.",
    )

    @classmethod
    def from_pb(cls, draft: draft_pb.Draft) -> Draft:
        return cls(
            source=draft,
            id=strawberry.ID(draft.draft_id),
            mode=DraftMode(draft.mode),
            patch=draft.patch,
            bracket=bracket_of(draft.bracket),
            first_pick_side=Side(draft.first_pick_side),
            our_side=side_or_none(draft.our_side) if draft.HasField("our_side") else None,
            sequence=draft.sequence,
            completed=draft.completed,
            actions=[DraftAction.from_pb(a) for a in draft.state.actions],
            next_action=None if draft.completed else ExpectedAction.from_pb(draft.next_action),
            radiant_captain=Captain.from_pb(draft.radiant_captain),
            dire_captain=Captain.from_pb(draft.dire_captain),
            created_at=iso(draft.created_at),
            updated_at=iso(draft.updated_at),
            expires_at=iso(draft.expires_at),
        )


@strawberry.type(description="A new draft room and how others join it.")
class CreatedDraft:
    draft: Draft
    invite_code: str | None
    gsi_token: str | None = strawberry.field(
        description="Token for Game State Integration posts (mirror drafts); null otherwise."
    )


@strawberry.type(description="The draft joined and the seat taken.")
class JoinedDraft:
    draft: Draft
    side: Side


@strawberry.type(description="How a draft ended.")
class DraftCompletion:
    radiant_win_probability: float | None
    model_version: str
    completed_at: str | None


@strawberry.type(
    description="One message of draftUpdates: exactly one event field is set (nextAction comes "
    "with action and banSkipped); sequence never decreases."
)
class DraftUpdate:
    sequence: int
    snapshot: Draft | None = None
    action: DraftAction | None = None
    next_action: ExpectedAction | None = None
    suggestions: Suggestions | None = None
    completed: DraftCompletion | None = None
    ban_skipped: Side | None = None
    captain_joined: Captain | None = None

    @classmethod
    def from_pb(
        cls, message: draft_pb.WatchDraftResponse, heroes: Mapping[int, Hero]
    ) -> DraftUpdate:
        """From a WatchDraft message; `heroes` (the catalog) names the heroes of suggestions."""
        update = cls(sequence=message.sequence)
        match message.WhichOneof("event"):
            case "snapshot":
                update.snapshot = Draft.from_pb(message.snapshot)
            case "action_applied":
                applied = message.action_applied
                update.action = DraftAction.from_pb(applied.action, applied.timed_out)
                update.next_action = ExpectedAction.from_pb(applied.next_action)
            case "suggestions_updated":
                update.suggestions = Suggestions.from_update(message.suggestions_updated, heroes)
            case "completed":
                done = message.completed
                update.completed = DraftCompletion(
                    radiant_win_probability=done.radiant_win_probability
                    if done.HasField("radiant_win_probability")
                    else None,
                    model_version=done.model_version,
                    completed_at=iso_or_none(done, "completed_at"),
                )
            case "ban_skipped":
                update.ban_skipped = Side(message.ban_skipped.side)
                update.next_action = ExpectedAction.from_pb(message.ban_skipped.next_action)
            case "captain_joined":
                update.captain_joined = Captain.from_pb(message.captain_joined)
        return update


# -- users and keys ----------------------------------------------------------------------------


@strawberry.type(description="A player's draft preferences.")
class Preferences:
    preferred_positions: list[Position]
    hero_pool_hero_ids: list[int]
    favourite_hero_ids: list[int]
    disliked_hero_ids: list[int]
    default_skill_bracket: SkillBracket
    version: int
    updated_at: str | None

    @classmethod
    def from_pb(cls, prefs: user_pb.Preferences) -> Preferences:
        return cls(
            preferred_positions=[Position(p) for p in prefs.preferred_positions if p],
            hero_pool_hero_ids=list(prefs.hero_pool_hero_ids),
            favourite_hero_ids=list(prefs.favourite_hero_ids),
            disliked_hero_ids=list(prefs.disliked_hero_ids),
            default_skill_bracket=bracket_of(prefs.default_skill_bracket),
            version=prefs.version,
            updated_at=iso_or_none(prefs, "updated_at"),
        )


@strawberry.type(description="The signed-in caller.")
class Me:
    user_id: str
    account_id: int | None
    roles: list[str]
    tier: str
    persona_name: str | None
    avatar_url: str | None
    profile_version: int
    preferences: Preferences | None

    @classmethod
    def from_pb(cls, profile: user_pb.Profile, roles: list[str]) -> Me:
        return cls(
            user_id=profile.user_id,
            account_id=profile.account_id or None,
            roles=roles,
            tier=c.SubscriptionTier.Name(profile.tier).removeprefix("SUBSCRIPTION_TIER_").lower(),
            persona_name=profile.persona_name or None,
            avatar_url=profile.avatar_url or None,
            profile_version=profile.version,
            preferences=Preferences.from_pb(profile.preferences)
            if profile.HasField("preferences")
            else None,
        )


@strawberry.type(description="An API key (its secret is shown once, at creation).")
class ApiKey:
    id: strawberry.ID
    name: str
    scopes: list[str]
    prefix: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None

    @classmethod
    def from_pb(cls, key: auth_pb.ApiKey) -> ApiKey:
        return cls(
            id=strawberry.ID(key.key_id),
            name=key.name,
            scopes=list(key.scopes),
            prefix=key.prefix,
            created_at=iso(key.created_at),
            last_used_at=iso_or_none(key, "last_used_at"),
            revoked_at=iso_or_none(key, "revoked_at"),
        )


@strawberry.type(description="A new API key and its secret (shown only now).")
class CreatedApiKey:
    api_key: ApiKey
    secret: str
