"""`counterpick token`: mint an access token from the deployment's signing keys, for operators
and scripts of a local deployment (calling etl or ingest as an admin, say) without a browser.

The keys are the ones `counterpick up` gives auth (<state dir>/auth-keys), so every service of
that deployment accepts the token. It is printed alone on the last line.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc

from services.auth.keys import KeyRing
from services.auth.tokens import issue_access_token
from services.cli.mesh_state import MeshState
from services.common.channels import open_channel
from services.common.config import TokenSettings
from services.common.tokens import STEAM_ID64_BASE

AUTH_KEYS_DIR = "auth-keys"


def offline_user_id(account_id: int) -> str:
    """The user id a token gets when no user service answers: stable per account."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"steam:{account_id}"))


def registered_user_id(state_dir: Path, account_id: int) -> str | None:
    """The user service's id of Steam account `account_id`, registering the account as a Steam
    login would (UpsertSteamUser), so the token is a real user's: auth can look up its tier
    and its API keys can be exchanged. None when the deployment's user service does not answer."""
    from counterpick.user.v1 import user_service_pb2 as user_pb
    from counterpick.user.v1 import user_service_pb2_grpc as user_grpc

    state = MeshState.read(state_dir)
    if state is None or "user" not in state.children or not state.supervisor_alive():
        return None
    keys = KeyRing.load(state_dir / AUTH_KEYS_DIR, create=False)
    settings = TokenSettings()
    service = issue_access_token(
        keys,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        user_id=OPERATOR_SUBJECT,
        roles=["service"],
        now=int(time.time()),
        lifetime_seconds=60,
    ).token

    async def upsert() -> str:
        async with open_channel(state.children["user"].address) as channel:
            response = await user_grpc.UserServiceStub(channel).UpsertSteamUser(
                user_pb.UpsertSteamUserRequest(steamid64=STEAM_ID64_BASE + account_id),
                metadata=(("authorization", f"Bearer {service}"),),
                timeout=10,
            )
        return response.profile.user_id

    try:
        return asyncio.run(upsert())
    except grpc.RpcError as error:
        print(
            f"counterpick: the user service did not register the account: {error}", file=sys.stderr
        )
        return None


def mint_token(
    state_dir: Path,
    *,
    account_id: int,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    ttl_seconds: int = 900,
    user_id: str | None = None,
) -> str:
    """An access token for Steam account `account_id` with the "user" role plus `roles`, for
    `user_id` (default: the account's offline id, see `offline_user_id`)."""
    keys_dir = state_dir / AUTH_KEYS_DIR
    if not any(keys_dir.glob("*.pem")):
        raise SystemExit(f"no signing keys in {keys_dir}: run `counterpick up` first")
    ring = KeyRing.load(keys_dir, create=False)
    settings = TokenSettings()
    return issue_access_token(
        ring,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        user_id=user_id or offline_user_id(account_id),
        roles=["user", *(role for role in roles if role != "user")],
        now=int(time.time()),
        steamid64=STEAM_ID64_BASE + account_id,
        scopes=scopes,
        lifetime_seconds=ttl_seconds,
    ).token


# What the CLI's own calls (`counterpick dlq`, `counterpick recompute`) are signed as.
OPERATOR_SUBJECT = "operator:cli"
OPERATOR_TOKEN_SECONDS = 600


def operator_metadata(state_dir: Path) -> tuple[tuple[str, str], ...]:
    """Bearer metadata for a CLI command calling the mesh as an admin: a short-lived token
    minted from the deployment's signing keys in `state_dir` (as `counterpick token` does).
    Without keys there (a deployment `counterpick up` did not start) the call goes out without
    a token, and the service says what it needs (UNAUTHENTICATED)."""
    keys_dir = state_dir / AUTH_KEYS_DIR
    if not any(keys_dir.glob("*.pem")):
        print(
            f"counterpick: no signing keys in {keys_dir}; calling without a token",
            file=sys.stderr,
        )
        return ()
    settings = TokenSettings()
    token = issue_access_token(
        KeyRing.load(keys_dir, create=False),
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        user_id=OPERATOR_SUBJECT,
        roles=["admin"],
        now=int(time.time()),
        lifetime_seconds=OPERATOR_TOKEN_SECONDS,
    ).token
    return (("authorization", f"Bearer {token}"),)
