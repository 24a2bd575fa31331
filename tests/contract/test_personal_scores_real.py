"""Personal Advantage Scores on the real player-level data sets, end to end.

The three sets go through `counterpick import` (the CLI's direct path) into an embedded
warehouse; a real model server recomputes over them and answers GetPersonalScores and
SuggestPicks over gRPC, reading the player's hero pool from a real UserService (PostgreSQL) as
itself. The tests share one import and one pair of servers (module scope): a recompute over the
imported matches is the slow part. The last test stops the user service.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2 as c
from counterpick.model.v1 import model_service_pb2 as pb
from counterpick.model.v1 import model_service_pb2_grpc as pb_grpc
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.cli.importing import run_import
from services.common.server import GrpcServer
from services.common.service_tokens import StaticMetadata
from services.common.tokens import STEAM_ID64_BASE
from services.etl.repo import Warehouse
from services.model.config import ModelSettings
from services.model.server import build_server
from services.user.config import UserSettings
from services.user.server import build_server as build_user_server
from tests.auth_keys import SigningKeys
from tests.conftest import POSTGRES_DSN, REDIS_CLAIM_ERROR, REDIS_URL
from tests.contract.test_model_service import Mesh, recompute
from tests.contract.test_user_service import drop_schema

HISTORY_ACCOUNT = 101695162
TRACKDOTA = "trackdota-pro-matches-2018-2019"
HISTORY = "api-samples/odota-web/players_101695162_matches_significant-0.json"
FILES = (
    f"{TRACKDOTA}/matches.csv.gz",
    f"{TRACKDOTA}/players.csv.gz",
    "opendota-pro-players-2020-2021/players.csv.gz",
    HISTORY,
)
Metadata = tuple[tuple[str, str], ...]


@dataclass
class Imported:
    dsn: str
    rows: dict[str, list[str]]  # file -> read, loaded, duplicates, skipped, rejected
    again: list[str]  # the trackdota players imported a second time
    stored: dict[int, int]  # account -> its match_players rows in the warehouse
    pro_account: int  # the trackdota account with the most rows


def _import(path: Path, state_dir: Path) -> list[str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert run_import([path], state_dir) == 0
    (line,) = [row for row in out.getvalue().splitlines() if row.startswith(str(path))]
    return re.split(r"\s{2,}", line)[1:]


def _top_trackdota_account(data_dir: Path) -> int:
    with gzip.open(data_dir / TRACKDOTA / "players.csv.gz", "rt") as handle:
        counts = Counter(row["account_id"] for row in csv.DictReader(handle) if row["hero_id"])
    return int(counts.most_common(1)[0][0])


@pytest.fixture(scope="module")
def imported(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Imported:
    state_dir = tmp_path_factory.mktemp("pas-state")
    rows = {name: _import(data_dir / name, state_dir) for name in FILES}
    again = _import(data_dir / FILES[1], state_dir)
    pro_account = _top_trackdota_account(data_dir)
    dsn = f"chdb://{(state_dir / 'warehouse').resolve()}"
    warehouse = Warehouse.connect(dsn)
    try:
        stored = {
            account: int(
                warehouse.query_rows(
                    "SELECT count() FROM match_players FINAL WHERE account_id = {a:UInt32}",
                    {"a": account},
                )[0][0]
            )
            for account in (HISTORY_ACCOUNT, pro_account)
        }
    finally:
        warehouse.close()
    return Imported(dsn, rows, again, stored, pro_account)


def test_the_player_level_sets_import_through_the_cli(imported: Imported) -> None:
    rows = imported.rows
    # read, loaded, duplicates, skipped (reason count), rejected (reason count)
    assert rows[FILES[0]] == ["5100", "5098", "0", "too_short 2", "-"]
    # The same matches again, now with accounts: stored again, except 34 whose player rows
    # lack a hero (rejected with the reason) and the 2 too short.
    assert rows[FILES[1]] == ["5100", "5064", "0", "too_short 2", "missing_field 34"]
    assert rows[FILES[2]] == ["3091", "3091", "0", "-", "-"]
    # 12 of the history's matches are pro matches already stored with all ten players (the
    # account is a pro player's): duplicates, never replaced by a one-player copy.
    assert rows[FILES[3]] == [
        "6211",
        "5990",
        "12",
        "abandoned 68, too_short 69, unsupported_game_mode 55, unsupported_lobby_type 5",
        "invalid_value 7, unknown_hero 5",
    ]
    # Importing a file twice stores nothing twice.
    assert imported.again == ["5100", "0", "5064", "too_short 2", "missing_field 34"]
    assert imported.stored[HISTORY_ACCOUNT] == 6104  # 5990 + 114 in the pro sets


@dataclass
class Stack:
    model: pb_grpc.ModelServiceAsyncStub
    users: user_grpc.UserServiceAsyncStub
    user_server: GrpcServer
    keys: SigningKeys
    user_id: str

    def player(self, account_id: int = HISTORY_ACCOUNT) -> Metadata:
        token = self.keys.token("user", account_id=account_id, user_id=self.user_id)
        return (("authorization", f"Bearer {token}"),)


@pytest.fixture(scope="module")
async def stack(
    imported: Imported, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    if REDIS_CLAIM_ERROR:
        pytest.fail(REDIS_CLAIM_ERROR)
    keys = SigningKeys.create(tmp_path_factory.mktemp("keys"))
    schema = f"user_test_{uuid.uuid4().hex[:12]}"
    user_server = build_user_server(
        UserSettings.model_validate(
            {
                "port": 0,
                "postgres_dsn": POSTGRES_DSN,
                "redis_url": REDIS_URL,
                "user_postgres_schema": schema,
                "rate_limit_key_prefix": f"test:{schema}",
                "store_wait_seconds": 5,
            }
        ),
        key_source=keys.source,
    )
    user_port = await user_server.start()
    service = keys.metadata("service")
    model_server = build_server(
        ModelSettings.model_validate(
            {
                "port": 0,
                "redis_url": REDIS_URL,
                "model_warehouse_dsn": imported.dsn,
                "model_recompute_interval_seconds": 0,
                "user_addr": f"127.0.0.1:{user_port}",
            }
        ),
        key_source=keys.source,
        user_tokens=StaticMetadata(service),
    )
    model_port = await model_server.start()
    redis = aioredis.Redis.from_url(REDIS_URL)
    model_channel = grpc.aio.insecure_channel(f"127.0.0.1:{model_port}")
    user_channel = grpc.aio.insecure_channel(f"127.0.0.1:{user_port}")
    try:
        model = pb_grpc.ModelServiceStub(model_channel)
        await recompute(Mesh(model, model_channel, redis, imported.dsn, keys))
        users = user_grpc.UserServiceStub(user_channel)
        created = await users.UpsertSteamUser(
            user_pb.UpsertSteamUserRequest(
                steamid64=STEAM_ID64_BASE + HISTORY_ACCOUNT, persona_name="history"
            ),
            metadata=service,
        )
        yield Stack(model, users, user_server, keys, created.profile.user_id)
    finally:
        await model_channel.close()
        await user_channel.close()
        await model_server.stop(0)
        await user_server.stop(0)
        await redis.flushdb()
        await redis.aclose()
        await drop_schema(POSTGRES_DSN, schema)


async def _scores(stack: Stack, account: int) -> list[pb.PersonalScore]:
    scores: list[pb.PersonalScore] = []
    token = ""
    while True:
        response = await stack.model.GetPersonalScores(
            pb.GetPersonalScoresRequest(
                account_id=account, page=c.PageRequest(page_size=500, page_token=token)
            ),
            metadata=stack.player(account),
        )
        scores.extend(response.scores)
        token = response.page.next_page_token
        if not token:
            return scores


def _check(scores: list[pb.PersonalScore]) -> None:
    for score in scores:
        assert score.pas_interval.lower < score.pas < score.pas_interval.upper
        assert 0 <= score.wins <= score.games
        assert score.win_rate == pytest.approx(score.wins / score.games)
    assert [s.pas for s in scores] == sorted((s.pas for s in scores), reverse=True)


def _table(scores: list[pb.PersonalScore]) -> Iterator[str]:
    yield f"{'hero':>4} {'games':>5} {'wins':>4} {'E':>5} {'pas':>7}  interval            last"
    for s in scores:
        last = s.last_played_at.ToDatetime().date() if s.HasField("last_played_at") else "-"
        yield (
            f"{s.hero_id:>4} {s.games:>5} {s.wins:>4} {s.expected_win_rate:>5.3f} {s.pas:>+7.4f}"
            f"  [{s.pas_interval.lower:+.4f}, {s.pas_interval.upper:+.4f}]  {last}"
        )


async def test_history_account_scores(stack: Stack, imported: Imported) -> None:
    scores = await _scores(stack, HISTORY_ACCOUNT)
    _check(scores)
    # Every imported match counts, in patches without statistics (2012-2018) too.
    assert sum(s.games for s in scores) == imported.stored[HISTORY_ACCOUNT]
    # Most heroes were played only in patches without statistics, where E is 0.5; the
    # account's 2020-21 league games (7.28) have the hero's 7.28 rate in E.
    unknown = [s for s in scores if s.expected_win_rate == pytest.approx(0.5)]
    assert len(unknown) > len(scores) / 2
    assert any(s.expected_win_rate != pytest.approx(0.5) for s in scores)
    newest = max(s.last_played_at.seconds for s in scores)
    assert newest > 1536594324  # the history's newest match (2018-09-10): later league games
    print("\naccount 101695162: top five and bottom five heroes by PAS")
    print("\n".join(_table(scores[:5] + scores[-5:])))


async def test_pro_account_scores(stack: Stack, imported: Imported) -> None:
    scores = await _scores(stack, imported.pro_account)
    _check(scores)
    assert sum(s.games for s in scores) == imported.stored[imported.pro_account]
    # Undated trackdota games all weigh the same: more games, narrower interval.
    undated = [s for s in scores if not s.HasField("last_played_at")]
    assert len(undated) >= 10
    by_games = sorted(undated, key=lambda s: s.games)
    fewest, most = by_games[0], by_games[-1]
    assert most.games > 3 * fewest.games
    assert _width(most) < _width(fewest)


def _width(score: pb.PersonalScore) -> float:
    return score.pas_interval.upper - score.pas_interval.lower


def _pick_request(candidates: list[int] | None = None) -> pb.SuggestPicksRequest:
    return pb.SuggestPicksRequest(
        side=c.TEAM_SIDE_RADIANT,
        account_id=HISTORY_ACCOUNT,
        limit=50,
        candidate_hero_ids=candidates or [],
    )


async def test_suggestions_follow_the_players_preferences(stack: Stack) -> None:
    before = await stack.model.SuggestPicks(_pick_request(), metadata=stack.player())
    assert "user service" not in before.fallback_note
    assert not any(s.in_hero_pool for s in before.suggestions)
    ranked = [s.hero_id for s in before.suggestions]
    excluded, pool = ranked[:3], ranked[3:5]
    await stack.users.UpdatePreferences(
        user_pb.UpdatePreferencesRequest(
            preferences=user_pb.Preferences(hero_pool_hero_ids=pool, disliked_hero_ids=excluded)
        ),
        metadata=stack.player(),
    )
    after = await stack.model.SuggestPicks(_pick_request(), metadata=stack.player())
    heroes = [s.hero_id for s in after.suggestions]
    assert len(heroes) == 50
    assert not set(excluded) & set(heroes)
    assert {s.hero_id for s in after.suggestions if s.in_hero_pool} == set(pool)
    only = await stack.model.SuggestPicks(_pick_request(excluded + pool), metadata=stack.player())
    assert sorted(s.hero_id for s in only.suggestions) == sorted(pool)
    nothing = await stack.model.SuggestPicks(_pick_request(excluded), metadata=stack.player())
    assert list(nothing.suggestions) == []


async def test_suggestions_come_without_the_user_service(stack: Stack) -> None:
    await stack.user_server.stop(0)  # last test of the module
    response = await stack.model.SuggestPicks(_pick_request(), metadata=stack.player())
    assert len(response.suggestions) == 50
    assert not any(s.in_hero_pool for s in response.suggestions)
    assert "user service down" in response.fallback_note
