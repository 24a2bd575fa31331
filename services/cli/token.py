"""`counterpick token`: mint an access token from the deployment's signing keys, for operators
and scripts of a local deployment (calling etl or ingest as an admin, say) without a browser.

The keys are the ones `counterpick up` gives auth (<state dir>/auth-keys), so every service of
that deployment accepts the token. It is printed alone on the last line.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.tokens import issue_access_token
from services.common.config import TokenSettings
from services.common.tokens import STEAM_ID64_BASE

AUTH_KEYS_DIR = "auth-keys"


def mint_token(
    state_dir: Path,
    *,
    account_id: int,
    roles: Sequence[str] = (),
    scopes: Sequence[str] = (),
    ttl_seconds: int = 900,
) -> str:
    """An access token for Steam account `account_id` with the "user" role plus `roles`."""
    keys_dir = state_dir / AUTH_KEYS_DIR
    if not any(keys_dir.glob("*.pem")):
        raise SystemExit(f"no signing keys in {keys_dir}: run `counterpick up` first")
    ring = KeyRing.load(keys_dir, create=False)
    settings = TokenSettings()
    return issue_access_token(
        ring,
        issuer=settings.token_issuer,
        audience=settings.token_audience,
        # A user id of the account's own (stable per account), not a user service record.
        user_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"steam:{account_id}")),
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
