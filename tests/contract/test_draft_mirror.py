"""MirrorGameDraft over real gRPC on Redis: a mirror draft follows a real game's draft,
idempotent and monotone (repeated and out-of-date posts change nothing, a longer one appends
its suffix atomically, a contradicting one fails and changes nothing), guarded by the draft's
GSI token and the service/admin access rule; watchers see the applied actions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from tests.auth_keys import SigningKeys
from tests.draft_server import DraftServer, draft_server
from tests.rpc import bearer, fails

RADIANT, DIRE = c.TEAM_SIDE_RADIANT, c.TEAM_SIDE_DIRE
PICK, BAN = c.DRAFT_ACTION_KIND_PICK, c.DRAFT_ACTION_KIND_BAN


@pytest.fixture
async def mesh(redis_url: str, tmp_path: Path) -> AsyncIterator[tuple[DraftServer, SigningKeys]]:
    keys = SigningKeys.create(tmp_path / "keys")
    async with draft_server(redis_url, keys) as server:
        yield server, keys


def a(kind: int, side: int, hero: int) -> c.DraftAction:
    return c.DraftAction(
        kind=c.DraftActionKind.ValueType(kind), side=c.TeamSide.ValueType(side), hero_id=hero
    )


GAME = [
    a(BAN, RADIANT, 19),
    a(BAN, DIRE, 8),
    a(BAN, DIRE, 129),
    a(PICK, RADIANT, 29),
    a(PICK, DIRE, 86),
]


async def create_mirror(server: DraftServer, keys: SigningKeys) -> pb.CreateDraftResponse:
    return await server.stub.CreateDraft(
        pb.CreateDraftRequest(
            mode=c.DRAFT_MODE_CAPTAINS_MODE,
            first_pick_side=RADIANT,
            patch="7.41",
            mirror=True,
        ),
        metadata=bearer(keys.token("user", user_id="caster")),
    )


async def test_posts_apply_once_in_the_games_order(
    mesh: tuple[DraftServer, SigningKeys],
) -> None:
    server, keys = mesh
    created = await create_mirror(server, keys)
    draft_id, token = created.draft.draft_id, created.gsi_token
    assert created.draft.mirror
    assert len(token) >= 32
    assert not created.draft.HasField("timers")
    assert not created.draft.HasField("clock")
    service = bearer(keys.token("service"))

    async def post(actions: list[c.DraftAction], **turn: int) -> pb.MirrorGameDraftResponse:
        return await server.stub.MirrorGameDraft(
            pb.MirrorGameDraftRequest(
                draft_id=draft_id,
                gsi_token=token,
                actions=actions,
                **turn,  # type: ignore[arg-type]
            ),
            metadata=service,
        )

    watch = server.stub.WatchDraft(
        pb.WatchDraftRequest(draft_id=draft_id), metadata=bearer(keys.token("user"))
    )
    assert (await anext(aiter(watch))).WhichOneof("event") == "snapshot"

    assert (await post([])).applied == 0
    first = await post(GAME[:1], active_side=DIRE, active_kind=BAN)
    assert first.applied == 1
    assert (first.draft.next_action.side, first.draft.next_action.kind) == (DIRE, BAN)
    assert (await post(GAME[:1])).applied == 0  # repeated
    third = await post(GAME[:3])
    assert third.applied == 2
    assert (third.draft.next_action.side, third.draft.next_action.kind) == (RADIANT, BAN)
    assert (await post(GAME[:2])).applied == 0  # out of date
    done = await post(GAME)
    assert done.applied == 2
    assert [(x.kind, x.side, x.hero_id) for x in done.draft.state.actions] == [
        (x.kind, x.side, x.hero_id) for x in GAME
    ]
    assert [x.order for x in done.draft.state.actions] == list(range(5))
    assert done.draft.sequence == 5

    events = []
    async with asyncio.timeout(5):
        async for message in watch:
            if message.WhichOneof("event") == "action_applied":
                events.append(message)
            if len(events) == 5:
                break
    watch.cancel()
    assert [e.action_applied.action.hero_id for e in events] == [x.hero_id for x in GAME]
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5]


async def test_bad_posts_fail_and_change_nothing(mesh: tuple[DraftServer, SigningKeys]) -> None:
    server, keys = mesh
    created = await create_mirror(server, keys)
    draft_id, token = created.draft.draft_id, created.gsi_token
    service = bearer(keys.token("service"))

    def request(actions: list[c.DraftAction], gsi_token: str = token) -> pb.MirrorGameDraftRequest:
        return pb.MirrorGameDraftRequest(draft_id=draft_id, gsi_token=gsi_token, actions=actions)

    assert (await server.stub.MirrorGameDraft(request(GAME[:2]), metadata=service)).applied == 2

    contradicts = await fails(
        server.stub.MirrorGameDraft(
            request([GAME[0], a(BAN, DIRE, 1), *GAME[2:]]), metadata=service
        )
    )
    assert (contradicts.code, contradicts.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_ILLEGAL_DRAFT_ACTION",
    )
    wrong = await fails(server.stub.MirrorGameDraft(request(GAME, "not-it"), metadata=service))
    assert wrong.code == grpc.StatusCode.PERMISSION_DENIED
    unknown = await fails(
        server.stub.MirrorGameDraft(request([*GAME[:2], a(PICK, RADIANT, 99999)]), metadata=service)
    )
    assert (unknown.code, unknown.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ERROR_REASON_UNKNOWN_HERO",
    )
    # A duplicate later in the suffix: nothing of the suffix is applied.
    duplicate = await fails(
        server.stub.MirrorGameDraft(
            request([*GAME[:2], a(PICK, RADIANT, 29), a(PICK, DIRE, 29)]), metadata=service
        )
    )
    assert (duplicate.code, duplicate.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ERROR_REASON_DUPLICATE_HERO",
    )
    six = [a(PICK, RADIANT, hero) for hero in (1, 2, 3, 4, 5, 6)]
    too_many = await fails(
        server.stub.MirrorGameDraft(request([*GAME[:2], *six]), metadata=service)
    )
    assert (too_many.code, too_many.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ERROR_REASON_TOO_MANY_PICKS",
    )
    unspecified = await fails(
        server.stub.MirrorGameDraft(
            request([*GAME[:2], c.DraftAction(hero_id=5)]), metadata=service
        )
    )
    assert unspecified.code == grpc.StatusCode.INVALID_ARGUMENT
    # A user (not a service or admin) may not post, even with the right token.
    user = await fails(
        server.stub.MirrorGameDraft(request(GAME), metadata=bearer(keys.token("user")))
    )
    assert user.code == grpc.StatusCode.PERMISSION_DENIED
    # Actions come only from the game.
    submit = await fails(
        server.stub.SubmitAction(
            pb.SubmitActionRequest(draft_id=draft_id, action=a(BAN, RADIANT, 1)),
            metadata=bearer(keys.token("user", user_id="caster")),
        )
    )
    assert submit.code == grpc.StatusCode.FAILED_PRECONDITION

    after = await server.stub.GetDraft(
        pb.GetDraftRequest(draft_id=draft_id), metadata=bearer(keys.token("user"))
    )
    assert after.draft.sequence == 2
    assert [x.hero_id for x in after.draft.state.actions] == [19, 8]


async def test_racing_identical_posts_apply_once(mesh: tuple[DraftServer, SigningKeys]) -> None:
    server, keys = mesh
    created = await create_mirror(server, keys)
    service = bearer(keys.token("service"))
    request = pb.MirrorGameDraftRequest(
        draft_id=created.draft.draft_id, gsi_token=created.gsi_token, actions=GAME
    )
    results = await asyncio.gather(
        *(server.stub.MirrorGameDraft(request, metadata=service) for _ in range(8))
    )
    assert sum(r.applied for r in results) == len(GAME)
    assert {r.draft.sequence for r in results} == {len(GAME)}


async def test_only_mirror_drafts_take_game_posts(mesh: tuple[DraftServer, SigningKeys]) -> None:
    server, keys = mesh
    plain = await server.stub.CreateDraft(
        pb.CreateDraftRequest(mode=c.DRAFT_MODE_CAPTAINS_MODE, first_pick_side=RADIANT),
        metadata=bearer(keys.token("user")),
    )
    assert plain.gsi_token == ""
    assert not plain.draft.mirror
    refused = await fails(
        server.stub.MirrorGameDraft(
            pb.MirrorGameDraftRequest(draft_id=plain.draft.draft_id, gsi_token="x", actions=GAME),
            metadata=bearer(keys.token("service")),
        )
    )
    assert refused.code == grpc.StatusCode.FAILED_PRECONDITION
    timed = await fails(
        server.stub.CreateDraft(
            pb.CreateDraftRequest(
                mode=c.DRAFT_MODE_CAPTAINS_MODE,
                first_pick_side=RADIANT,
                mirror=True,
                timers=pb.DraftTimers(),
            ),
            metadata=bearer(keys.token("user")),
        )
    )
    assert timed.code == grpc.StatusCode.INVALID_ARGUMENT
