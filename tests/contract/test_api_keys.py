"""API keys and service credentials end to end: a real auth server (PostgreSQL, Redis), a stand-in
user service, and a real ModelService server that verifies the exchanged tokens against auth's
JWKS and the shared deny list, as any service of the mesh does."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from counterpick.common.v1 import common_pb2
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.auth.api_keys import new_service_credential, service_credential_entry
from services.auth.config import AuthSettings
from services.auth.keys import KeyRing
from services.auth.server import build_server
from services.common.config import ServiceSettings
from services.common.dota_constants import load_constants
from services.common.errors import DependencyUnavailable
from services.common.server import GrpcServer, registration
from services.common.service_tokens import ServiceTokens
from services.common.tokens import DenyList, TokenVerifier, jwks_from_auth
from services.model.runtime import ModelRuntime
from services.model.server import SERVICE_NAME as MODEL_SERVICE
from services.model.server import ModelServicer
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.contract.test_auth_service import Users
from tests.rpc import bearer, fails

STEAMID = 76561198000000123
# A verifier sees a revocation after at most one deny-list refresh (2 s) plus a call.
REVOCATION_SECONDS = 6.0


@dataclass
class Mesh:
    auth: pb_grpc.AuthServiceAsyncStub
    model: model_grpc.ModelServiceAsyncStub
    users: Users
    keys: SigningKeys
    settings: AuthSettings
    auth_port: int
    service_secret: str

    def user_token(self, user_id: str, *roles: str) -> tuple[tuple[str, str], ...]:
        return bearer(
            self.keys.token(
                *(roles or ("user",)), account_id=STEAMID - 76561197960265728, user_id=user_id
            )
        )


@pytest.fixture
async def mesh(tmp_path: Path, postgres_dsn: str, redis_url: str) -> AsyncIterator[Mesh]:
    users = Users()  # type: ignore[abstract]  # a stand-in: only what auth calls
    user_port = free_port()
    secret = new_service_credential()
    settings = AuthSettings.model_validate(
        {
            "port": 0,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "user_addr": f"127.0.0.1:{user_port}",
            "auth_service_credentials": service_credential_entry("model", secret),
        }
    )
    auth_server = build_server(settings)
    auth_port = await auth_server.start()
    keys = SigningKeys(KeyRing.load(tmp_path / "keys", create=False))

    def verifier() -> TokenVerifier:
        return TokenVerifier(
            issuer=settings.token_issuer,
            audience=settings.token_audience,
            fetch_keys=jwks_from_auth(f"127.0.0.1:{auth_port}"),
            deny_list=DenyList(redis_url),
        )

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
        verifier=verifier(),
    )
    await user_server.start()
    constants = load_constants()
    model_server = GrpcServer(
        name="model",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                ModelServicer(ModelRuntime(constants=constants), constants),
                model_grpc.add_ModelServiceServicer_to_server,
                MODEL_SERVICE,
            )
        ],
        verifier=verifier(),
    )
    model_port = await model_server.start()
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{auth_port}") as auth_channel,
        grpc.aio.insecure_channel(f"127.0.0.1:{model_port}") as model_channel,
    ):
        yield Mesh(
            pb_grpc.AuthServiceStub(auth_channel),
            model_grpc.ModelServiceStub(model_channel),
            users,
            keys,
            settings,
            auth_port,
            secret,
        )
    await model_server.stop(0)
    await user_server.stop(0)
    await auth_server.stop(0)


async def model_answers(mesh: Mesh, token: str) -> grpc.StatusCode:
    """OK when the model let the call through (GetModelInfo then fails only for want of a
    snapshot, FAILED_PRECONDITION), else the code the access check refused it with."""
    failure = await fails(
        mesh.model.GetModelInfo(model_pb.GetModelInfoRequest(), metadata=bearer(token))
    )
    return (
        grpc.StatusCode.OK if failure.code == grpc.StatusCode.FAILED_PRECONDITION else failure.code
    )


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Seconds until `check` holds; fails after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if await check():
            return time.monotonic() - started
        await asyncio.sleep(0.2)
    pytest.fail(f"not within {seconds} s")


async def test_a_key_is_shown_once_stored_as_a_hash_and_exchanged_for_a_scoped_token(
    mesh: Mesh, postgres_dsn: str
) -> None:
    owner = str(uuid.uuid4())
    mesh.users.tiers[owner] = common_pb2.SUBSCRIPTION_TIER_PRO
    created = await mesh.auth.CreateApiKey(
        pb.CreateApiKeyRequest(name="overlay bot", scopes=["model:read"]),
        metadata=mesh.user_token(owner),
    )
    secret = created.secret
    assert secret.startswith("cpk_")
    assert len(secret) > 40
    assert created.api_key.prefix == secret[:8]
    assert list(created.api_key.scopes) == ["model:read"]

    listed = await mesh.auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=mesh.user_token(owner))
    assert [key.key_id for key in listed.api_keys] == [created.api_key.key_id]
    assert secret.encode() not in listed.SerializeToString()
    assert not listed.api_keys[0].HasField("last_used_at")

    connection = await asyncpg.connect(postgres_dsn)
    try:
        row = await connection.fetchrow(
            "SELECT * FROM auth_service.auth_api_keys WHERE key_id = $1",
            uuid.UUID(created.api_key.key_id),
        )
    finally:
        await connection.close()
    assert bytes(row["secret_hash"]) == hashlib.sha256(secret.encode()).digest()
    assert all(secret not in str(value) for value in row.values())

    exchanged = await mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=secret))
    assert exchanged.token_type == "Bearer"
    assert list(exchanged.scopes) == ["model:read"]
    lifetime = exchanged.access_expires_at.seconds - time.time()
    assert 800 < lifetime <= 900
    caller = await TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=jwks_from_auth(f"127.0.0.1:{mesh.auth_port}"),
        deny_list=None,  # reading the claims; revocation is tested below
    ).verify(exchanged.access_token)
    assert caller.user_id == owner
    assert caller.scopes == ("model:read",)
    assert caller.tier == "pro"
    assert caller.roles == frozenset({"user"})
    assert caller.steamid64 == STEAMID
    assert caller.api_key_id == created.api_key.key_id

    # Allowed where its scope is asked for; a key without it is refused.
    assert await model_answers(mesh, exchanged.access_token) == grpc.StatusCode.OK
    other = await mesh.auth.CreateApiKey(
        pb.CreateApiKeyRequest(name="drafter", scopes=["draft:read"]),
        metadata=mesh.user_token(owner),
    )
    drafter = await mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=other.secret))
    refused = await fails(
        mesh.model.GetModelInfo(
            model_pb.GetModelInfoRequest(), metadata=bearer(drafter.access_token)
        )
    )
    assert (refused.code, refused.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ERROR_REASON_PERMISSION_DENIED",
    )
    assert "model:read" in refused.message

    listed = await mesh.auth.ListApiKeys(pb.ListApiKeysRequest(), metadata=mesh.user_token(owner))
    assert [key.name for key in listed.api_keys] == ["drafter", "overlay bot"]  # newest first
    assert listed.api_keys[1].HasField("last_used_at")


async def test_a_key_token_cannot_make_keys_and_bad_requests_are_refused(mesh: Mesh) -> None:
    owner = str(uuid.uuid4())
    created = await mesh.auth.CreateApiKey(
        pb.CreateApiKeyRequest(name="bot", scopes=["model:read", "draft:write"]),
        metadata=mesh.user_token(owner),
    )
    token = (
        await mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=created.secret))
    ).access_token
    denied = await fails(
        mesh.auth.CreateApiKey(
            pb.CreateApiKeyRequest(name="more", scopes=["model:read"]), metadata=bearer(token)
        )
    )
    assert denied.code == grpc.StatusCode.PERMISSION_DENIED

    anonymous = await fails(
        mesh.auth.CreateApiKey(pb.CreateApiKeyRequest(name="x", scopes=["model:read"]))
    )
    assert (anonymous.code, anonymous.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ERROR_REASON_UNAUTHENTICATED",
    )
    for name, scopes in (
        ("", ["model:read"]),
        ("x" * 65, ["model:read"]),
        ("ok", []),
        ("ok", ["root"]),
    ):
        bad = await fails(
            mesh.auth.CreateApiKey(
                pb.CreateApiKeyRequest(name=name, scopes=scopes), metadata=mesh.user_token(owner)
            )
        )
        assert (bad.code, bad.reason) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_ARGUMENT",
        )

    empty = await fails(mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key="")))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    for forged in ("cpk_" + "A" * 43, "not-a-key", created.secret[:-2] + "xx"):
        unknown = await fails(mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=forged)))
        assert (unknown.code, unknown.reason) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "ERROR_REASON_TOKEN_INVALID",
        )


async def test_a_revoked_key_cannot_be_exchanged_and_its_tokens_die_within_seconds(
    mesh: Mesh,
) -> None:
    owner = str(uuid.uuid4())
    created = await mesh.auth.CreateApiKey(
        pb.CreateApiKeyRequest(name="bot", scopes=["model:read"]), metadata=mesh.user_token(owner)
    )
    token = (
        await mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=created.secret))
    ).access_token
    assert await model_answers(mesh, token) == grpc.StatusCode.OK

    # Somebody else's key looks like no key at all.
    stranger = await fails(
        mesh.auth.RevokeApiKey(
            pb.RevokeApiKeyRequest(key_id=created.api_key.key_id),
            metadata=mesh.user_token(str(uuid.uuid4())),
        )
    )
    assert (stranger.code, stranger.reason) == (grpc.StatusCode.NOT_FOUND, "ERROR_REASON_NOT_FOUND")

    revoked = await mesh.auth.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=created.api_key.key_id), metadata=mesh.user_token(owner)
    )
    assert revoked.api_key.HasField("revoked_at")
    again = await mesh.auth.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=created.api_key.key_id), metadata=mesh.user_token(owner)
    )
    assert again.api_key.revoked_at == revoked.api_key.revoked_at

    exchange = await fails(
        mesh.auth.ExchangeApiKey(pb.ExchangeApiKeyRequest(api_key=created.secret))
    )
    assert (exchange.code, exchange.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ERROR_REASON_TOKEN_INVALID",
    )

    async def refused() -> bool:
        return await model_answers(mesh, token) == grpc.StatusCode.UNAUTHENTICATED

    await eventually(refused, REVOCATION_SECONDS)


async def test_an_access_token_revoked_by_jti_is_refused_by_another_service(mesh: Mesh) -> None:
    owner = str(uuid.uuid4())
    token = mesh.keys.token("user", user_id=owner)
    assert await model_answers(mesh, token) == grpc.StatusCode.OK
    caller = await TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=mesh.keys.source,
        deny_list=None,  # reading the claims only
    ).verify(token)
    response = await mesh.auth.RevokeToken(
        pb.RevokeTokenRequest(access_token_jti=caller.jti), metadata=bearer(token)
    )
    assert response.revoked_count == 1

    async def refused() -> bool:
        return await model_answers(mesh, token) == grpc.StatusCode.UNAUTHENTICATED

    await eventually(refused, REVOCATION_SECONDS)
    # A token of the same user that was not revoked still works.
    assert await model_answers(mesh, mesh.keys.token("user", user_id=owner)) == grpc.StatusCode.OK


async def test_signing_out_everywhere_denies_every_access_token_of_the_user(mesh: Mesh) -> None:
    owner = str(uuid.uuid4())
    other = str(uuid.uuid4())
    phone = mesh.keys.token("user", user_id=owner)  # two sessions of one user
    laptop = mesh.keys.token("user", user_id=owner)
    bystander = mesh.keys.token("user", user_id=other)
    for token in (phone, laptop, bystander):
        assert await model_answers(mesh, token) == grpc.StatusCode.OK
    await mesh.auth.RevokeToken(pb.RevokeTokenRequest(all_sessions=True), metadata=bearer(laptop))

    async def both_refused() -> bool:
        codes = {await model_answers(mesh, token) for token in (phone, laptop)}
        return codes == {grpc.StatusCode.UNAUTHENTICATED}

    await eventually(both_refused, REVOCATION_SECONDS)
    assert await model_answers(mesh, bystander) == grpc.StatusCode.OK
    # A token issued after the sign-out (a new login) is not caught by it.
    await asyncio.sleep(1.1)
    assert await model_answers(mesh, mesh.keys.token("user", user_id=owner)) == grpc.StatusCode.OK


async def test_the_twenty_first_unrevoked_key_exceeds_the_quota(mesh: Mesh) -> None:
    owner = str(uuid.uuid4())
    metadata = mesh.user_token(owner)
    ids: list[str] = []
    for number in range(20):
        created = await mesh.auth.CreateApiKey(
            pb.CreateApiKeyRequest(name=f"bot {number}", scopes=["model:read"]), metadata=metadata
        )
        ids.append(created.api_key.key_id)
    over = await fails(
        mesh.auth.CreateApiKey(
            pb.CreateApiKeyRequest(name="bot 21", scopes=["model:read"]), metadata=metadata
        )
    )
    assert (over.code, over.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_QUOTA_EXCEEDED",
    )
    # Revoked keys do not count.
    await mesh.auth.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=ids[0]), metadata=metadata)
    await mesh.auth.CreateApiKey(
        pb.CreateApiKeyRequest(name="bot 21", scopes=["model:read"]), metadata=metadata
    )


async def test_a_service_credential_yields_a_service_token_that_is_renewed_before_expiry(
    mesh: Mesh,
) -> None:
    now = [time.time()]
    tokens = ServiceTokens(
        credential=mesh.service_secret,
        auth_addr=f"127.0.0.1:{mesh.auth_port}",
        clock=lambda: now[0],
    )
    first = await tokens.metadata()
    assert await tokens.metadata() == first  # cached, not exchanged per call
    caller = await TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=mesh.keys.source,
        deny_list=None,  # reading the claims only
    ).verify(first[0][1].removeprefix("Bearer "))
    assert caller.user_id == "service:model"
    assert caller.roles == frozenset({"service"})
    assert caller.scopes == ("model:read",)

    now[0] += 0.85 * 900  # past the renewal point, before the expiry
    renewed = await tokens.metadata()
    assert renewed != first

    wrong = ServiceTokens(credential="cps_" + "B" * 43, auth_addr=f"127.0.0.1:{mesh.auth_port}")
    with pytest.raises(DependencyUnavailable):
        await wrong.metadata()


async def test_without_auth_a_service_token_cannot_be_had_unless_one_is_cached() -> None:
    down = ServiceTokens(credential="cps_" + "C" * 43, auth_addr=f"127.0.0.1:{free_port()}")
    with pytest.raises(DependencyUnavailable) as raised:
        await down.metadata()
    assert raised.value.dependency == "auth"


async def test_a_service_token_asked_for_while_auth_starts_arrives_once_auth_answers(
    tmp_path: Path, postgres_dsn: str, redis_url: str
) -> None:
    """A mesh comes up all at once: the model's first exchange may reach auth's port before auth
    listens. ServiceTokens retries with backoff instead of failing that first read."""
    secret = new_service_credential()
    port = free_port()
    settings = AuthSettings.model_validate(
        {
            "port": port,
            "postgres_dsn": postgres_dsn,
            "redis_url": redis_url,
            "auth_keys_dir": str(tmp_path / "keys"),
            "user_addr": f"127.0.0.1:{free_port()}",
            "auth_service_credentials": service_credential_entry("model", secret),
        }
    )
    tokens = ServiceTokens(credential=secret, auth_addr=f"127.0.0.1:{port}")
    pending = asyncio.create_task(tokens.metadata())
    await asyncio.sleep(1.0)
    assert not pending.done()  # still retrying: nothing listens yet
    auth = build_server(settings)
    await auth.start()
    try:
        metadata = await asyncio.wait_for(pending, 10)
        caller = await TokenVerifier(
            issuer="counterpick-auth",
            audience="counterpick",
            fetch_keys=jwks_from_auth(f"127.0.0.1:{port}"),
            deny_list=DenyList(redis_url),
        ).verify(metadata[0][1].removeprefix("Bearer "))
        assert caller.user_id == "service:model"
    finally:
        await auth.stop(0)
