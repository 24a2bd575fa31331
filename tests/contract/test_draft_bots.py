"""A bot drafts over the public gRPC API with an API key, as a third-party tool would.

Real auth (PostgreSQL, Redis) issues and exchanges the key; a real draft server verifies the
exchanged token against auth's JWKS and the shared deny list, enforces the RPCs' scopes from the
contract's access option, and rate-limits the bot by its owner's tier.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from counterpick.auth.v1 import auth_service_pb2 as auth_pb
from counterpick.auth.v1 import auth_service_pb2_grpc as auth_grpc
from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth.config import AuthSettings
from services.auth.keys import KeyRing
from services.auth.server import build_server as build_auth
from services.common.config import ServiceSettings
from services.common.server import GrpcServer, registration
from services.draft.config import DraftSettings
from services.draft.server import build_server as build_draft
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.contract.test_auth_service import Users
from tests.rpc import Metadata, bearer, fails

# The free tier's quota on the draft server in this test: low enough to reach quickly.
FREE_CALLS_PER_WINDOW = 25
# A verifier sees a revocation after at most one deny-list refresh (2 s) plus a call.
REVOCATION_SECONDS = 6.0


@dataclass
class Deployment:
    auth: auth_grpc.AuthServiceAsyncStub
    draft: pb_grpc.DraftServiceAsyncStub
    keys: SigningKeys

    def owner(self, user_id: str) -> Metadata:
        """A signed-in user's own token (from a Steam login), who makes keys for their bots."""
        return bearer(self.keys.token("user", user_id=user_id))

    async def bot_token(self, owner: str, *scopes: str) -> tuple[str, str]:
        """(key id, access token) of a new key of `owner`'s with `scopes`, exchanged once."""
        created = await self.auth.CreateApiKey(
            auth_pb.CreateApiKeyRequest(name="draft bot", scopes=list(scopes)),
            metadata=self.owner(owner),
        )
        exchanged = await self.auth.ExchangeApiKey(
            auth_pb.ExchangeApiKeyRequest(api_key=created.secret)
        )
        return created.api_key.key_id, exchanged.access_token


@pytest.fixture
async def deployment(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> AsyncIterator[Deployment]:
    users = Users()  # type: ignore[abstract]  # a stand-in: only the tier lookups auth makes
    user_port = free_port()
    auth_settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "user_addr": f"127.0.0.1:{user_port}",
        }
    )
    auth_server = build_auth(auth_settings)
    auth_port = await auth_server.start()
    user_server = GrpcServer(
        name="user",
        settings=ServiceSettings(port=user_port),
        services=[
            registration(
                users,
                user_grpc.add_UserServiceServicer_to_server,
                "counterpick.user.v1.UserService",
            )
        ],
    )
    await user_server.start()
    draft_settings = DraftSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "auth_addr": f"127.0.0.1:{auth_port}",
            # No model: the draft goes on without suggestions, which this test does not need.
            "model_addr": f"127.0.0.1:{free_port()}",
            "user_addr": f"127.0.0.1:{user_port}",
            "draft_key_prefix": f"test:bots:{uuid.uuid4().hex}",
            "rate_limit_key_prefix": f"test:bots:rate:{uuid.uuid4().hex}",
            "rate_limit_free_per_minute": FREE_CALLS_PER_WINDOW,
        }
    )
    # Tokens are verified the way the deployed service verifies them: auth's GetJwks, the deny
    # list in REDIS_URL (verifier_from_settings).
    draft_server = build_draft(draft_settings)
    draft_port = await draft_server.start()
    keys = SigningKeys(KeyRing.load(tmp_path / "keys", create=False))
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{draft_port}") as draft_channel,
    ):
        yield Deployment(
            auth_grpc.AuthServiceStub(auth_channel), pb_grpc.DraftServiceStub(draft_channel), keys
        )
    await draft_server.stop(0)
    await user_server.stop(0)
    await auth_server.stop(0)


def captains_mode() -> pb.CreateDraftRequest:
    return pb.CreateDraftRequest(
        mode=c.DRAFT_MODE_CAPTAINS_MODE, first_pick_side=c.TEAM_SIDE_RADIANT
    )


async def next_free_action(
    stub: pb_grpc.DraftServiceAsyncStub, draft: pb.Draft, metadata: Metadata
) -> pb.SubmitActionResponse:
    """Submit the expected action with the first hero id the draft accepts."""
    taken = {a.hero_id for a in draft.state.actions}
    for hero in range(1, 160):
        if hero in taken:
            continue
        try:
            return await stub.SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft.draft_id,
                    action=c.DraftAction(
                        kind=draft.next_action.kind, side=draft.next_action.side, hero_id=hero
                    ),
                    expected_sequence=draft.sequence,
                ),
                metadata=metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.INVALID_ARGUMENT:  # a gap in the hero ids
                raise
    raise AssertionError("no hero was accepted")


async def test_a_bot_creates_acts_and_watches_with_an_exchanged_api_key(
    deployment: Deployment,
) -> None:
    owner = str(uuid.uuid4())
    _, token = await deployment.bot_token(owner, "draft:read", "draft:write")
    bot = bearer(token)
    created = await deployment.draft.CreateDraft(captains_mode(), metadata=bot)
    draft = created.draft
    assert draft.radiant_captain.user_id == owner  # the key acts as its owner
    assert draft.dire_captain.user_id == owner

    seen: list[pb.WatchDraftResponse] = []
    snapshot_seen = asyncio.Event()

    async def watch() -> None:
        async for message in deployment.draft.WatchDraft(
            pb.WatchDraftRequest(draft_id=draft.draft_id), metadata=bot
        ):
            seen.append(message)
            snapshot_seen.set()
            if len([m for m in seen if m.HasField("action_applied")]) == 3:
                return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(snapshot_seen.wait(), 10)
    for _ in range(3):
        draft = (await next_free_action(deployment.draft, draft, bot)).draft
    await asyncio.wait_for(watcher, 10)
    assert seen[0].HasField("snapshot")
    applied = [m.action_applied for m in seen if m.HasField("action_applied")]
    assert [a.sequence for a in applied] == [1, 2, 3]
    assert [a.action.hero_id for a in applied] == [a.hero_id for a in draft.state.actions]


async def test_a_key_without_draft_write_reads_but_cannot_act(deployment: Deployment) -> None:
    owner = str(uuid.uuid4())
    _, writer = await deployment.bot_token(owner, "draft:read", "draft:write")
    _, reader = await deployment.bot_token(owner, "draft:read")
    _, modeller = await deployment.bot_token(owner, "model:read")
    draft = (await deployment.draft.CreateDraft(captains_mode(), metadata=bearer(writer))).draft

    fetched = await deployment.draft.GetDraft(
        pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(reader)
    )
    assert fetched.draft.draft_id == draft.draft_id
    for call in (
        deployment.draft.CreateDraft(captains_mode(), metadata=bearer(reader)),
        deployment.draft.SubmitAction(
            pb.SubmitActionRequest(
                draft_id=draft.draft_id,
                action=c.DraftAction(
                    kind=draft.next_action.kind, side=draft.next_action.side, hero_id=1
                ),
            ),
            metadata=bearer(reader),
        ),
        deployment.draft.GetDraft(
            pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(modeller)
        ),
    ):
        refused = await fails(call)
        assert (refused.code, refused.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "ERROR_REASON_PERMISSION_DENIED",
        )
        assert "draft:" in refused.message
    unchanged = await deployment.draft.GetDraft(
        pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(writer)
    )
    assert unchanged.draft.sequence == 0


async def test_a_revoked_key_and_its_tokens_are_refused_by_the_draft_service(
    deployment: Deployment,
) -> None:
    owner = str(uuid.uuid4())
    key_id, token = await deployment.bot_token(owner, "draft:read", "draft:write")
    draft = (await deployment.draft.CreateDraft(captains_mode(), metadata=bearer(token))).draft
    await deployment.auth.RevokeApiKey(
        auth_pb.RevokeApiKeyRequest(key_id=key_id), metadata=deployment.owner(owner)
    )

    async def refusal() -> grpc.StatusCode | None:
        try:
            await deployment.draft.GetDraft(
                pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(token)
            )
        except grpc.aio.AioRpcError as error:
            return error.code()
        return None

    deadline = asyncio.get_running_loop().time() + REVOCATION_SECONDS
    while (code := await refusal()) is None:
        assert asyncio.get_running_loop().time() < deadline, "the revoked key's token still works"
        await asyncio.sleep(0.2)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # The owner's own session is untouched.
    still = await deployment.draft.GetDraft(
        pb.GetDraftRequest(draft_id=draft.draft_id), metadata=deployment.owner(owner)
    )
    assert still.draft.draft_id == draft.draft_id


async def test_a_bot_over_its_tiers_rate_gets_resource_exhausted_with_retry_info(
    deployment: Deployment,
) -> None:
    owner = str(uuid.uuid4())
    _, token = await deployment.bot_token(owner, "draft:read", "draft:write")
    draft = (await deployment.draft.CreateDraft(captains_mode(), metadata=bearer(token))).draft
    answered = 1
    while True:
        try:
            await deployment.draft.GetDraft(
                pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(token)
            )
        except grpc.aio.AioRpcError:
            break
        answered += 1
        assert answered <= FREE_CALLS_PER_WINDOW, "the free tier's quota was not applied"
    assert answered == FREE_CALLS_PER_WINDOW
    limited = await fails(
        deployment.draft.GetDraft(
            pb.GetDraftRequest(draft_id=draft.draft_id), metadata=bearer(token)
        )
    )
    assert (limited.code, limited.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "ERROR_REASON_RATE_LIMITED",
    )
    assert limited.retry_delay is not None
    assert 0 < limited.retry_delay <= 60
