"""Access tokens: what the shared verifier accepts, and every forgery it must refuse."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.auth.keys import KeyRing, SigningKey, write_new_key
from services.auth.tokens import issue_access_token, new_refresh_token, parse_refresh_token
from services.common.config import TokenSettings
from services.common.errors import PermissionDenied
from services.common.tokens import (
    KeySet,
    MissingToken,
    TokenExpired,
    TokenInvalid,
    TokenVerifier,
    bearer_token,
    key_source_from_settings,
    require_caller,
    set_current_caller,
)
from tests.auth_keys import SigningKeys

ISSUER = "https://auth.counterpick.test"
AUDIENCE = "counterpick"
STEAMID = 76561198000000042


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.load(tmp_path / "keys", create=True)


def verifier_for(ring: KeyRing) -> TokenVerifier:
    return TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, fetch_keys=SigningKeys(ring).source, deny_list=None
    )


def issue(ring: KeyRing, **overrides: object) -> str:
    arguments: dict[str, object] = {
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "user_id": "u-1",
        "roles": ["user"],
        "now": int(time.time()),
        "steamid64": STEAMID,
    }
    arguments.update(overrides)
    return issue_access_token(ring, **arguments).token  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: Mapping[str, object], claims: Mapping[str, object], signature: bytes = b""
) -> str:
    return ".".join(
        (b64(json.dumps(header).encode()), b64(json.dumps(claims).encode()), b64(signature))
    )


def claims_of(token: str) -> dict[str, object]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def test_a_valid_token_names_the_caller(ring: KeyRing) -> None:
    caller = await verifier_for(ring).verify(issue(ring, roles=["user", "admin"], tier="plus"))
    assert caller.user_id == "u-1"
    assert caller.account_id == 39734314
    assert caller.has_any_role("admin")
    assert caller.tier == "plus"


async def test_expired_and_not_yet_valid_tokens_are_refused(ring: KeyRing) -> None:
    verifier = verifier_for(ring)
    with pytest.raises(TokenExpired):
        await verifier.verify(issue(ring, now=int(time.time()) - 3600, lifetime_seconds=60))
    with pytest.raises(TokenInvalid, match="not valid yet"):
        await verifier.verify(issue(ring, now=int(time.time()) + 3600))


async def test_wrong_audience_or_issuer_is_refused(ring: KeyRing) -> None:
    verifier = verifier_for(ring)
    with pytest.raises(TokenInvalid, match=r"(?i)audience"):
        await verifier.verify(issue(ring, audience="someone-else"))
    with pytest.raises(TokenInvalid, match=r"(?i)issuer"):
        await verifier.verify(issue(ring, issuer="https://evil.example"))


async def test_alg_none_is_refused(ring: KeyRing) -> None:
    genuine = issue(ring)
    header = {"alg": "none", "typ": "at+jwt", "kid": ring.signing_key.kid}
    with pytest.raises(TokenInvalid):
        await verifier_for(ring).verify(forge(header, claims_of(genuine)))


async def test_hs256_signed_with_the_public_key_is_refused(ring: KeyRing) -> None:
    """Algorithm confusion: an attacker signs with HMAC using the published public key."""
    public = ring.signing_key.public_bytes
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.signing_key.kid}
    body = claims_of(issue(ring)) | {"roles": ["admin"]}
    signing_input = ".".join((b64(json.dumps(header).encode()), b64(json.dumps(body).encode())))
    import hashlib
    import hmac

    signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenInvalid, match="algorithm"):
        await verifier_for(ring).verify(f"{signing_input}.{b64(signature)}")
    pem = ring.signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signature = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(TokenInvalid):
        await verifier_for(ring).verify(f"{signing_input}.{b64(signature)}")


async def test_unknown_kid_and_a_foreign_key_are_refused(ring: KeyRing) -> None:
    stranger = KeyRing([SigningKey(Ed25519PrivateKey.generate(), time.time())])
    with pytest.raises(TokenInvalid, match="not a published key"):
        await verifier_for(ring).verify(issue(stranger))
    # A foreign key claiming our kid: the signature does not verify.
    token = jwt.encode(
        claims_of(issue(ring)),
        stranger.signing_key.private_key,
        algorithm="EdDSA",
        headers={"kid": ring.signing_key.kid, "typ": "at+jwt"},
    )
    with pytest.raises(TokenInvalid):
        await verifier_for(ring).verify(token)


async def test_tampered_and_truncated_tokens_are_refused(ring: KeyRing) -> None:
    header, body, signature = issue(ring).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["roles"] = ["user", "admin"]
    tampered = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    verifier = verifier_for(ring)
    with pytest.raises(TokenInvalid):
        await verifier.verify(tampered)
    for truncated in (f"{header}.{body}", f"{header}.{body}.{signature[:-6]}", header, ""):
        with pytest.raises(TokenInvalid):
            await verifier.verify(truncated)


async def test_a_refresh_token_is_not_an_access_token_and_vice_versa(ring: KeyRing) -> None:
    refresh = new_refresh_token()
    with pytest.raises(TokenInvalid):
        await verifier_for(ring).verify(refresh.token)
    assert parse_refresh_token(issue(ring)) is None
    parsed = parse_refresh_token(refresh.token)
    assert parsed is not None
    assert parsed.matches(refresh.secret_hash)
    # A JWT without the access-token type (say, an ID token of ours) is not accepted either.
    untyped = jwt.encode(
        claims_of(issue(ring)),
        ring.signing_key.private_key,
        algorithm="EdDSA",
        headers={"kid": ring.signing_key.kid},
    )
    with pytest.raises(TokenInvalid, match="not an access token"):
        await verifier_for(ring).verify(untyped)


async def test_missing_claims_are_refused(ring: KeyRing) -> None:
    for claim in ("jti", "sub", "nbf"):
        body = claims_of(issue(ring))
        del body[claim]
        token = jwt.encode(
            body,
            ring.signing_key.private_key,
            algorithm="EdDSA",
            headers={"kid": ring.signing_key.kid, "typ": "at+jwt"},
        )
        with pytest.raises(TokenInvalid, match=claim):
            await verifier_for(ring).verify(token)


async def test_key_rollover_keeps_old_tokens_and_learns_new_keys(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    old_ring = KeyRing.load(directory, create=True)
    old_token = issue(old_ring)
    published = {"ring": old_ring}

    async def fetch() -> KeySet:
        return KeySet.from_jwks(published["ring"].jwks())

    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, fetch_keys=fetch, min_refresh_seconds=0, deny_list=None
    )
    await verifier.verify(old_token)
    new_key = write_new_key(directory)
    later = time.time() + 60  # the newest file signs; make "newest" unambiguous
    os.utime(new_key, (later, later))
    new_ring = KeyRing.load(directory, create=False)
    assert len(new_ring.keys) == 2
    assert new_ring.signing_key.kid != old_ring.signing_key.kid
    published["ring"] = new_ring
    # A token of the new key: the verifier refetches on the unknown kid.
    await verifier.verify(issue(new_ring))
    # Tokens of the old key stay valid while it is published.
    await verifier.verify(old_token)
    assert {key["kid"] for key in new_ring.jwks()["keys"]} == {k.kid for k in new_ring.keys}


def test_a_private_key_in_a_jwks_is_ignored(ring: KeyRing) -> None:
    entry = ring.signing_key.public_jwk() | {"d": "secret"}
    assert KeySet.from_jwks({"keys": [entry]}).keys == {}
    assert KeySet.from_jwks({"keys": [ring.signing_key.public_jwk() | {"alg": "HS256"}]}).keys == {}


def test_bearer_metadata_and_role_checks() -> None:
    assert bearer_token([("authorization", "Bearer abc.def.ghi")]) == "abc.def.ghi"
    assert bearer_token([("x-other", "1")]) is None
    with pytest.raises(TokenInvalid):
        bearer_token([("authorization", "Basic dXNlcjpwYXNz")])
    set_current_caller(None)
    with pytest.raises(MissingToken):
        require_caller()
    from services.common.tokens import Caller

    set_current_caller(Caller("u-1", frozenset({"user"}), "j", 0))
    assert require_caller().user_id == "u-1"
    with pytest.raises(PermissionDenied):
        require_caller("admin", "service")
    set_current_caller(None)


async def test_keys_from_a_jwks_file_verify_and_a_rewritten_file_is_read_again(
    tmp_path: Path,
) -> None:
    """AUTH_JWKS_FILE: the public keys from a file instead of auth's GetJwks."""
    old_ring = KeyRing.load(tmp_path / "keys", create=True)
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(old_ring.jwks()))
    settings = TokenSettings(auth_jwks_file=jwks_file)
    verifier = TokenVerifier(
        issuer=ISSUER,
        audience=AUDIENCE,
        fetch_keys=key_source_from_settings(settings),
        min_refresh_seconds=0,
        deny_list=None,
    )
    assert (await verifier.verify(issue(old_ring))).user_id
    new_ring = KeyRing.load(tmp_path / "other-keys", create=True)
    with pytest.raises(TokenInvalid, match="not a published key"):
        await verifier.verify(issue(new_ring))
    jwks_file.write_text(json.dumps(new_ring.jwks()))  # a rollover: the file is rewritten
    assert (await verifier.verify(issue(new_ring))).user_id
