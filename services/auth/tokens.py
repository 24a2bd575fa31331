"""Issuing tokens: signed access JWTs and opaque refresh tokens.

Access token: EdDSA JWT, header {alg, kid, typ: at+jwt}, claims iss, aud, sub, iat, nbf, exp, jti,
roles, tier, steamid, scope (and api_key when exchanged for an API key); 15 minutes by default,
short because a verifier that cannot reach the deny list accepts it until it expires.
Refresh token: `rt1.<token id>.<secret>`, 30 days by default, single use; only a SHA-256 of the
secret is stored, so a database leak does not leak sessions. It is not a JWT, so it can never be
mistaken for an access token (and an access token is never found in the refresh store).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import jwt

from services.auth.keys import ALGORITHM, KeyRing
from services.common.tokens import ACCESS_TOKEN_TYPE

ACCESS_TOKEN_SECONDS = 15 * 60
REFRESH_TOKEN_SECONDS = 30 * 24 * 3600
REFRESH_PREFIX = "rt1"


@dataclass(frozen=True)
class AccessToken:
    """A signed access token and what it says."""

    token: str
    jti: str
    issued_at: int
    expires_at: int


def issue_access_token(
    ring: KeyRing,
    *,
    issuer: str,
    audience: str,
    user_id: str,
    roles: Sequence[str],
    now: int,
    steamid64: int = 0,
    tier: str = "free",
    scopes: Sequence[str] = (),
    lifetime_seconds: int = ACCESS_TOKEN_SECONDS,
    api_key_id: str = "",
) -> AccessToken:
    """Sign an access token with the ring's newest key."""
    key = ring.signing_key
    jti = uuid.uuid4().hex
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
        "jti": jti,
        "roles": list(roles),
        "tier": tier,
        "steamid": str(steamid64),
        "scope": " ".join(scopes),
    }
    if api_key_id:
        # Names the API key (or service credential) the token was exchanged for, so revoking the
        # key denies every token it yielded (the verifiers' deny list holds "key:<id>").
        claims["api_key"] = api_key_id
    token = jwt.encode(
        claims,
        key.private_key,
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    return AccessToken(token, jti, now, now + lifetime_seconds)


@dataclass(frozen=True)
class RefreshSecret:
    """A new refresh token: what the client gets and what the store keeps."""

    token: str  # give to the client
    token_id: str
    secret_hash: bytes  # store


def new_refresh_token() -> RefreshSecret:
    """A fresh random refresh token."""
    token_id = uuid.uuid4().hex
    secret = secrets.token_urlsafe(32)
    return RefreshSecret(f"{REFRESH_PREFIX}.{token_id}.{secret}", token_id, hash_secret(secret))


def hash_secret(secret: str) -> bytes:
    """What the store keeps of a refresh secret (high-entropy, so a plain hash suffices)."""
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True)
class ParsedRefreshToken:
    """The parts of a presented refresh token."""

    token_id: str
    secret: str

    def matches(self, stored_hash: bytes) -> bool:
        """Constant-time comparison with the stored hash."""
        return hmac.compare_digest(hash_secret(self.secret), stored_hash)


def parse_refresh_token(token: str) -> ParsedRefreshToken | None:
    """The token's id and secret, or None when it is not shaped like one of ours."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != REFRESH_PREFIX:
        return None
    token_id, secret = parts[1], parts[2]
    try:
        uuid.UUID(hex=token_id)
        base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    except ValueError:
        return None
    if len(secret) < 40:
        return None
    return ParsedRefreshToken(token_id, secret)
