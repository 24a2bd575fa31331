"""gRPC wiring of the model service: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from counterpick.common.v1 import common_pb2
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from services.common.channels import open_channel
from services.common.dota import Side, SkillBracket
from services.common.dota_constants import ConstantsWatcher, DotaConstants, load_constants
from services.common.dota_proto import (
    bracket_from_proto,
    bracket_to_proto,
    side_from_proto,
    side_to_proto,
)
from services.common.errors import DependencyUnavailable, InvalidArgument, PermissionDenied
from services.common.paging import fingerprint, slice_page
from services.common.rate_limit import rate_limiter_from_settings
from services.common.server import GrpcServer, registration
from services.common.service_tokens import ServiceTokens, TokenSource
from services.common.stores import Stores
from services.common.timestamps import to_timestamp as _timestamp
from services.common.tokens import KeySource, require_caller, verifier_from_settings
from services.common.warehouse import open_reader
from services.common.warehouse.reader import WarehouseReader
from services.model.config import ModelSettings
from services.model.drafts import (
    Draft,
    DraftAction,
    DraftContext,
    Suggestion,
    TermKind,
    build_draft,
    clamp_limit,
    predict,
    suggest,
)
from services.model.positions import Assignment, open_positions
from services.model.runtime import ModelRuntime
from services.model.snapshot import ModelSnapshot
from services.model.statistics import (
    HeroRecord,
    PairOrder,
    hero_record,
    pair_partners,
    pair_record,
)
from services.model.users import HeroPreferences, UserPreferences
from services.model.winmodel.metrics import Quality

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ModelService"].full_name

_KINDS: dict[int, bool] = {
    common_pb2.DRAFT_ACTION_KIND_PICK: True,
    common_pb2.DRAFT_ACTION_KIND_BAN: False,
}
_TERMS = {
    TermKind.HERO_STRENGTH: pb.TERM_KIND_HERO_STRENGTH,
    TermKind.MATCHUP: pb.TERM_KIND_MATCHUP,
    TermKind.SYNERGY: pb.TERM_KIND_SYNERGY,
    TermKind.PERSONAL: pb.TERM_KIND_PERSONAL,
    TermKind.POSITION_FIT: pb.TERM_KIND_POSITION_FIT,
}
_ATTRIBUTES = {
    "str": common_pb2.PRIMARY_ATTRIBUTE_STRENGTH,
    "agi": common_pb2.PRIMARY_ATTRIBUTE_AGILITY,
    "int": common_pb2.PRIMARY_ATTRIBUTE_INTELLIGENCE,
    "all": common_pb2.PRIMARY_ATTRIBUTE_UNIVERSAL,
}
_ATTACKS = {"Melee": common_pb2.ATTACK_TYPE_MELEE, "Ranged": common_pb2.ATTACK_TYPE_RANGED}
_PAIR_ORDERS: dict[int, PairOrder] = {
    pb.PAIR_SORT_UNSPECIFIED: PairOrder.SCORE_DESC,
    pb.PAIR_SORT_SCORE_DESC: PairOrder.SCORE_DESC,
    pb.PAIR_SORT_SCORE_ASC: PairOrder.SCORE_ASC,
    pb.PAIR_SORT_GAMES_DESC: PairOrder.GAMES_DESC,
    pb.PAIR_SORT_HERO_ID_ASC: PairOrder.HERO_ID_ASC,
}
DEFAULT_PAIR_PAGE = 150
DEFAULT_PAS_PAGE = 50


def _bracket(value: int) -> SkillBracket:
    """A request's bracket: unspecified means ALL; a value this build does not know is invalid."""
    if value == common_pb2.SKILL_BRACKET_UNSPECIFIED:
        return SkillBracket.ALL
    bracket = bracket_from_proto(value)
    if bracket is None:
        raise InvalidArgument(f"bracket {value} is not a known skill bracket", field="bracket")
    return bracket


def _pair_order(value: int) -> PairOrder:
    order = _PAIR_ORDERS.get(value)
    if order is None:
        raise InvalidArgument(f"sort {value} is not a known PairSort", field="sort")
    return order


def _interval(bounds: tuple[float, float]) -> common_pb2.Interval:
    return common_pb2.Interval(lower=bounds[0], upper=bounds[1], confidence_level=0.95)


class ModelServicer(pb_grpc.ModelServiceServicer):
    """counterpick.model.v1.ModelService."""

    def __init__(
        self,
        runtime: ModelRuntime,
        constants: DotaConstants | ConstantsWatcher,
        users: UserPreferences | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runtime = runtime
        self._users = users
        # A watcher follows dotaconstants updates (a new patch or hero) without a restart.
        self._constants_source = constants
        self._clock = clock

    @property
    def _constants(self) -> DotaConstants:
        source = self._constants_source
        return source.current() if isinstance(source, ConstantsWatcher) else source

    def _current_patch(self, snapshot: ModelSnapshot | None) -> str:
        """What an empty patch means: the newest patch started by now per the constants (a
        snapshot computed before it started, or before the constants knew it, still names the
        patch before), or the snapshot's when its data is newer than the constants' clock."""
        constants = self._constants
        started = constants.current_patch(self._clock()).name
        if snapshot is None:
            return started
        order = constants.patch_positions()
        return max(started, snapshot.current_patch, key=lambda name: order.get(name, -1))

    # -- helpers ------------------------------------------------------------------------------

    def _patch_proto(self, name: str) -> common_pb2.Patch:
        patch = self._constants.patch_named(name)
        if patch is None:
            return common_pb2.Patch(name=name)
        message = common_pb2.Patch(id=patch.id, name=patch.name)
        message.released_at.FromDatetime(patch.released_at)
        return message

    def _snapshot_proto(
        self, snapshot: ModelSnapshot, patch: str, bracket: SkillBracket
    ) -> pb.Snapshot:
        return pb.Snapshot(
            version=snapshot.version,
            computed_at=_timestamp(snapshot.computed_at),
            matches=snapshot.matches(patch, bracket),
        )

    def _draft(self, state: common_pb2.DraftState) -> Draft:
        actions = [
            DraftAction(
                order=action.order,
                is_pick=_KINDS.get(action.kind),
                side=side_from_proto(action.side),
                hero_id=action.hero_id,
            )
            for action in state.actions
        ]
        return build_draft(actions, self._constants.heroes)

    def _side(self, value: int) -> Side:
        side = side_from_proto(value)
        if side is None:
            raise InvalidArgument("side must be TEAM_SIDE_RADIANT or TEAM_SIDE_DIRE", field="side")
        return side

    def _hero(self, hero_id: int, field_name: str) -> int:
        if hero_id not in self._constants.heroes:
            raise InvalidArgument(
                f"{field_name} {hero_id} is not a known hero",
                field=field_name,
                reason="ERROR_REASON_UNKNOWN_HERO",
                metadata={"hero_id": str(hero_id)},
            )
        return hero_id

    def _context(self, patch: str, bracket_value: int) -> tuple[ModelSnapshot, DraftContext, str]:
        bracket = _bracket(bracket_value)
        self._known_patch(patch)
        snapshot = self._runtime.require()
        context = snapshot.context(patch or self._current_patch(snapshot), bracket)
        return snapshot, context, context.patch

    @staticmethod
    def _own_account(account_id: int) -> None:
        """Personal data needs a token of that very Steam account (admins and services
        excepted)."""
        caller = require_caller()
        if caller.account_id != account_id and not caller.has_any_role("admin", "service"):
            raise PermissionDenied("account_id is not the caller's own Steam account")

    def _known_patch(self, patch: str) -> None:
        if patch and self._constants.patch_named(patch) is None:
            raise InvalidArgument(
                f"patch {patch!r} is not a Dota 2 patch",
                field="patch",
                reason="ERROR_REASON_UNKNOWN_PATCH",
                metadata={"patch": patch},
            )

    async def _hero_preferences(self, account_id: int) -> HeroPreferences | None:
        """The pool and exclusions of the player asking for their own account; empty for a
        service or admin asking for someone (the draft service sends the captain's pool as
        candidates itself); None when UserService cannot answer."""
        caller = require_caller()
        if self._users is None or caller.account_id != account_id:
            return HeroPreferences()
        return await self._users.heroes(caller.user_id)

    def _suggestion(self, item: Suggestion, pool: frozenset[int] = frozenset()) -> pb.Suggestion:
        return pb.Suggestion(
            hero_id=item.hero_id,
            in_hero_pool=item.hero_id in pool,
            win_probability=item.win_probability,
            win_probability_delta=item.win_probability_delta,
            score=item.score,
            win_probability_interval=_interval(item.interval),
            games=item.games,
            # Built in one constructor call: adding terms one by one costs more than scoring.
            terms=[
                pb.SuggestionTerm(
                    kind=_TERMS[term.kind],
                    value=term.value,
                    games=term.games,
                    other_hero_id=term.other_hero_id,
                )
                for term in item.terms
            ],
        )

    # -- RPCs -----------------------------------------------------------------------------------

    async def ListHeroes(
        self, request: pb.ListHeroesRequest, context: Any
    ) -> pb.ListHeroesResponse:
        bracket = _bracket(request.bracket)
        patch = request.patch if request.HasField("patch") else ""
        self._known_patch(patch)
        snapshot = self._runtime.snapshot
        statistics = None
        name = patch or self._current_patch(snapshot)
        if snapshot is not None and snapshot.patches:
            # As every other RPC: a patch without statistics is answered from the nearest one
            # with statistics, which `patch` (the patch actually used) names.
            resolved = snapshot.context(name, bracket)
            statistics, name = resolved.statistics, resolved.patch
        response = pb.ListHeroesResponse(
            patch=self._patch_proto(name), bracket=bracket_to_proto(bracket)
        )
        if statistics is not None and snapshot is not None:
            response.snapshot.CopyFrom(self._snapshot_proto(snapshot, name, statistics.bracket))
        for hero_id in sorted(self._constants.heroes):
            hero = self._constants.heroes[hero_id]
            entry = response.heroes.add()
            entry.hero.CopyFrom(
                common_pb2.Hero(
                    id=hero.id,
                    name=hero.name,
                    localized_name=hero.localized_name,
                    primary_attribute=_ATTRIBUTES.get(hero.primary_attribute, 0),  # type: ignore[arg-type]
                    attack_type=_ATTACKS.get(hero.attack_type, 0),  # type: ignore[arg-type]
                    roles=list(hero.roles),
                    image_path=_image_path(hero.name),
                    icon_path=_image_path(hero.name, icon=True),
                )
            )
            if statistics is not None and statistics.hero_games[hero_id] > 0:
                entry.stats.CopyFrom(_hero_stats(hero_record(statistics, hero_id)))
        return response

    async def GetMatchups(
        self, request: pb.GetMatchupsRequest, context: Any
    ) -> pb.GetMatchupsResponse:
        response: pb.GetMatchupsResponse = await self._pairs(
            request, pb.GetMatchupsResponse, matchups=True
        )
        return response

    async def GetSynergies(
        self, request: pb.GetSynergiesRequest, context: Any
    ) -> pb.GetSynergiesResponse:
        response: pb.GetSynergiesResponse = await self._pairs(
            request, pb.GetSynergiesResponse, matchups=False
        )
        return response

    async def _pairs(self, request: Any, response_type: Any, *, matchups: bool) -> Any:
        hero = self._hero(request.hero_id, "hero_id")
        if request.min_games < 0:
            raise InvalidArgument(f"min_games {request.min_games} is negative", field="min_games")
        snapshot, ctx, patch = self._context(request.patch, request.bracket)
        statistics = ctx.statistics
        table = statistics.matchups if matchups else statistics.synergies
        others = pair_partners(
            table,
            hero,
            sorted(self._constants.heroes),
            request.min_games,
            _pair_order(request.sort),
        )
        query = fingerprint(
            "matchups" if matchups else "synergies",
            hero,
            request.patch,
            request.bracket,
            request.sort,
            request.min_games,
        )
        page, next_token = slice_page(
            others, request.page.page_size, request.page.page_token, query, DEFAULT_PAIR_PAGE
        )
        response = response_type(
            hero_id=hero,
            patch=self._patch_proto(patch),
            bracket=bracket_to_proto(statistics.bracket),
            hero_stats=_hero_stats(hero_record(statistics, hero)),
            snapshot=self._snapshot_proto(snapshot, patch, statistics.bracket),
        )
        response.page.next_page_token = next_token
        response.page.total_size = len(others)
        for other in page:
            pair = pair_record(table, hero, other)
            fields: dict[str, Any] = {
                "games": pair.games,
                "wins": pair.wins,
                "win_rate": pair.win_rate,
                "expected_win_rate": pair.expected_win_rate,
                "shrunk_win_rate": pair.shrunk_win_rate,
                "prior_weight": pair.prior_weight,
                "shrinkage": pair.shrinkage,
            }
            if matchups:
                response.matchups.add(
                    other_hero_id=other,
                    advantage=pair.score,
                    advantage_log_odds=pair.log_odds,
                    advantage_interval=_interval(pair.interval),
                    **fields,
                )
            else:
                response.synergies.add(
                    ally_hero_id=other,
                    synergy=pair.score,
                    synergy_log_odds=pair.log_odds,
                    synergy_interval=_interval(pair.interval),
                    **fields,
                )
        return response

    async def SuggestPicks(
        self, request: pb.SuggestPicksRequest, context: Any
    ) -> pb.SuggestPicksResponse:
        draft = self._draft(request.draft)
        side = self._side(request.side)
        limit = clamp_limit(request.limit)
        candidates = [
            self._hero(hero, f"candidate_hero_ids[{index}]")
            for index, hero in enumerate(request.candidate_hero_ids)
        ]
        _, ctx, patch = self._context(request.patch, request.bracket)
        notes = list(ctx.notes)
        personal = None
        heroes: HeroPreferences | None = HeroPreferences()
        if request.HasField("account_id"):
            if request.account_id == 0:
                raise InvalidArgument("account_id must be >= 1", field="account_id")
            self._own_account(request.account_id)
            asking = asyncio.create_task(self._hero_preferences(request.account_id))
            try:
                personal = await self._runtime.personal_map(request.account_id, patch)
            except DependencyUnavailable:
                notes.append("personal scores unavailable (warehouse down); not personalised")
            except BaseException:
                asking.cancel()
                raise
            heroes = await asking
            if heroes is None:
                notes.append("hero pool and excluded heroes unavailable (user service down)")
        position = _position(request)
        # Said only when a position is asked: the assignment alone needs no excuse.
        if position is not None and ctx.positions is None:
            notes.append("no position data in this snapshot; position not used")
        elif position is not None and ctx.positions is not None and ctx.positions.games == 0:
            notes.append(
                f"no parsed matches with positions in patch {ctx.patch or patch}; "
                "positions from dotaconstants roles"
            )
        excluded = heroes.excluded if heroes is not None else frozenset()
        allowed = candidates
        if excluded:
            slots = ctx.statistics.hero_slots
            wanted = set(candidates) or {hero for hero in self._constants.heroes if hero < slots}
            # None left: still ask for the requested candidates, all filtered out below.
            allowed = sorted(wanted - excluded) or candidates
        result = suggest(
            ctx,
            draft,
            side,
            limit=limit,
            candidates=allowed,
            personal=personal,
            position=position,
        )
        pool = heroes.pool if heroes is not None else frozenset()
        return pb.SuggestPicksResponse(
            suggestions=[
                self._suggestion(item, pool)
                for item in result.suggestions
                if item.hero_id not in excluded
            ],
            base_win_probability=result.base_win_probability,
            patch=self._patch_proto(patch),
            bracket=bracket_to_proto(ctx.statistics.bracket),
            fallback_note="; ".join(notes),
            model_version=ctx.model.version,
            personalized=result.personalized,
            assignment=[_assignment(entry) for entry in result.assignment],
            open_positions=(
                [_POSITION_PROTO[p] for p in open_positions(result.assignment)]
                if ctx.positions is not None
                else []
            ),
        )

    async def SuggestBans(
        self, request: pb.SuggestBansRequest, context: Any
    ) -> pb.SuggestBansResponse:
        draft = self._draft(request.draft)
        side = self._side(request.side)
        limit = clamp_limit(request.limit)
        _, ctx, patch = self._context(request.patch, request.bracket)
        result = suggest(ctx, draft, side.other, limit=limit)
        return pb.SuggestBansResponse(
            suggestions=[self._suggestion(item) for item in result.suggestions],
            enemy_base_win_probability=result.base_win_probability,
            patch=self._patch_proto(patch),
            bracket=bracket_to_proto(ctx.statistics.bracket),
            fallback_note="; ".join(ctx.notes),
            model_version=ctx.model.version,
        )

    async def PredictWin(
        self, request: pb.PredictWinRequest, context: Any
    ) -> pb.PredictWinResponse:
        draft = self._draft(request.draft)
        _, ctx, patch = self._context(request.patch, request.bracket)
        prediction = predict(ctx, draft)
        response = pb.PredictWinResponse(
            radiant_win_probability=prediction.radiant_win_probability,
            radiant_win_probability_interval=_interval(prediction.interval),
            model_version=ctx.model.version,
            patch=self._patch_proto(patch),
            bracket=bracket_to_proto(ctx.statistics.bracket),
            fallback_note="; ".join(ctx.notes),
        )
        for term in prediction.terms:
            entry = response.terms.add(
                kind=_TERMS[term.kind],
                side=side_to_proto(term.side),
                hero_id=term.hero_id,
                value=term.value,
                games=term.games,
            )
            if term.other_hero_id is not None:
                entry.other_hero_id = term.other_hero_id
        if ctx.model.quality is not None:
            response.quality.CopyFrom(_quality(ctx.model.quality))
        return response

    async def GetPersonalScores(
        self, request: pb.GetPersonalScoresRequest, context: Any
    ) -> pb.GetPersonalScoresResponse:
        if request.account_id == 0:
            raise InvalidArgument("account_id must be >= 1", field="account_id")
        self._own_account(request.account_id)
        patch = request.patch if request.HasField("patch") else ""
        self._known_patch(patch)
        scores = await self._runtime.personal_scores(request.account_id, patch or None)
        query = fingerprint("pas", request.account_id, patch)
        page, next_token = slice_page(
            scores, request.page.page_size, request.page.page_token, query, DEFAULT_PAS_PAGE
        )
        response = pb.GetPersonalScoresResponse(account_id=request.account_id)
        if patch:
            response.patch.CopyFrom(self._patch_proto(patch))
        response.page.next_page_token = next_token
        response.page.total_size = len(scores)
        for score in page:
            entry = response.scores.add(
                hero_id=score.hero_id,
                games=score.games,
                wins=score.wins,
                win_rate=score.win_rate,
                expected_win_rate=score.expected_win_rate,
                pas=score.pas,
                pas_interval=_interval(score.interval),
            )
            if score.last_played_at is not None:
                entry.last_played_at.FromSeconds(score.last_played_at)
        return response

    async def Recompute(self, request: pb.RecomputeRequest, context: Any) -> pb.RecomputeResponse:
        require_caller("admin", "service")
        if request.HasField("patch"):
            self._known_patch(request.patch)
        if request.HasField("bracket"):
            _bracket(request.bracket)
        if self._runtime.recomputer is None:
            raise DependencyUnavailable("clickhouse", "this replica has no warehouse to read")
        try:
            version = await self._runtime.store.current_version()
        except (RedisError, OSError) as error:
            raise DependencyUnavailable(
                "redis", f"snapshots cannot be published, Redis is unreachable: {error}"
            ) from error
        job_id, already_running = self._runtime.start_recompute()
        return pb.RecomputeResponse(
            job_id=job_id,
            snapshot_version=(version or 0) + (0 if already_running else 1),
            already_running=already_running,
        )

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: Any
    ) -> pb.GetModelInfoResponse:
        snapshot = self._runtime.require()
        current = self._current_patch(snapshot)
        # The model and statistics that answer for the current patch: its own, or while it
        # has none yet the previous patch's.
        resolved = snapshot.context(current, SkillBracket.ALL)
        model = resolved.model
        response = pb.GetModelInfoResponse(
            model_version=model.version,
            trained_at=_timestamp(model.trained_at),
            matches_used=model.matches_used,
            current_patch=self._patch_proto(current),
            snapshot=self._snapshot_proto(snapshot, resolved.patch, SkillBracket.ALL),
        )
        order = self._constants.patch_positions()
        for name in sorted(snapshot.patches, key=lambda name: order.get(name, -1)):
            response.patches.append(self._patch_proto(name))
        if model.quality is not None:
            response.quality.CopyFrom(_quality(model.quality))
        for run in await self._runtime.runs():
            entry = response.recent_runs.add(
                run_id=run.run_id,
                started_at=_timestamp(run.started_at),
                status=run.status,
                mode=run.mode,
                matches_used=run.matches_used,
                snapshot_version=run.snapshot_version or 0,
                error=run.error,
            )
            if run.finished_at is not None:
                entry.finished_at.CopyFrom(_timestamp(run.finished_at))
            if run.loaded_until is not None:
                entry.loaded_until.CopyFrom(_timestamp(run.loaded_until))
            for patch, brackets in sorted(run.coverage.items()):
                for name, matches in sorted(brackets.items()):
                    # Coverage of stored-only brackets (UNKNOWN) has no API value: left out.
                    value = bracket_to_proto(SkillBracket.parse(name))
                    if value != common_pb2.SKILL_BRACKET_UNSPECIFIED:
                        entry.coverage.add(patch=patch, bracket=value, matches=matches)
        return response


_POSITION_PROTO: dict[int, common_pb2.Position.ValueType] = {
    1: common_pb2.POSITION_CARRY,
    2: common_pb2.POSITION_MID,
    3: common_pb2.POSITION_OFFLANE,
    4: common_pb2.POSITION_SOFT_SUPPORT,
    5: common_pb2.POSITION_HARD_SUPPORT,
}


def _position(request: pb.SuggestPicksRequest) -> int | None:
    """The requested position 1..5; unset and POSITION_UNSPECIFIED are None."""
    if not request.HasField("position") or request.position == common_pb2.POSITION_UNSPECIFIED:
        return None
    if request.position not in _POSITION_PROTO:
        raise InvalidArgument(
            f"position {request.position} is not a known position", field="position"
        )
    return int(request.position)


def _assignment(entry: Assignment) -> pb.PositionAssignment:
    return pb.PositionAssignment(
        hero_id=entry.hero_id, position=_POSITION_PROTO[entry.position], frequency=entry.frequency
    )


def _image_path(name: str, *, icon: bool = False) -> str:
    short = name.removeprefix("npc_dota_hero_")
    folder = "heroes/icons" if icon else "heroes"
    return f"/apps/dota2/images/dota_react/{folder}/{short}.png"


def _hero_stats(record: HeroRecord) -> pb.HeroStats:
    return pb.HeroStats(
        games=record.games,
        wins=record.wins,
        win_rate=record.win_rate,
        win_rate_interval=_interval(record.interval),
    )


def _quality(quality: Quality) -> pb.QualityMetrics:
    return pb.QualityMetrics(
        log_loss=quality.log_loss,
        accuracy=quality.accuracy,
        roc_auc=quality.roc_auc,
        ece=quality.ece,
        brier_score=quality.brier,
        evaluated_on=quality.evaluated_on,
        evaluation_matches=quality.evaluation_matches,
    )


def open_source(settings: ModelSettings) -> WarehouseReader | None:
    """The warehouse the model reads: a direct DSN, else the etl service's read RPC."""
    # Reads through etl carry the model's own service token (its SERVICE_CREDENTIAL_FILE).
    return open_reader(
        settings.model_warehouse_dsn,
        settings.etl_addr,
        tokens=ServiceTokens.from_settings(settings),
    )


def build_server(
    settings: ModelSettings,
    key_source: KeySource | None = None,
    user_tokens: TokenSource | None = None,
) -> GrpcServer:
    """The model server: Redis opens, the snapshot loads, then the schedule starts. Tokens are
    verified against the auth service's JWKS (or `key_source`, for tests), and every call is
    counted against its caller's quota (RATE_LIMIT_*). UserService is called with the model's
    own service token (or `user_tokens`, for tests)."""
    stores = Stores(settings)
    constants = load_constants()
    watcher = ConstantsWatcher(initial=constants)
    runtime = ModelRuntime(
        constants=constants,
        reload_constants=watcher.current,
        recompute_interval_seconds=settings.model_recompute_interval_seconds,
        full_recompute_seconds=settings.model_full_recompute_seconds,
        poll_seconds=settings.model_snapshot_poll_seconds,
        pas_cache_seconds=settings.model_pas_cache_seconds,
        deployment=settings.deployment,
    )

    users = UserPreferences(
        lambda: open_channel(settings.user_addr),
        (user_tokens or ServiceTokens.from_settings(settings)).metadata,
        timeout_seconds=settings.model_user_timeout_seconds,
    )

    async def start() -> None:
        assert stores.redis is not None
        source = await asyncio.to_thread(open_source, settings)
        runtime.attach(stores.redis, source)
        await runtime.start()

    server = GrpcServer(
        name="model",
        settings=settings,
        services=[
            registration(
                ModelServicer(runtime, watcher, users),
                pb_grpc.add_ModelServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
        on_start=[stores.open, users.open, start],
        on_stop=[runtime.stop, stores.close, users.close],
        verifier=verifier_from_settings(settings, key_source),
        rate_limiter=rate_limiter_from_settings(settings, settings.redis_url, "model"),
    )
    # Redis or warehouse outages show as NOT_SERVING entries "<service>/redis" and
    # "<service>/warehouse"; the service itself stays SERVING on its last good snapshot.
    runtime.report_health = lambda name, ok: server.set_health(f"{SERVICE_NAME}/{name}", ok)
    return server
