"""API keys and service credentials: the rules, free of gRPC and storage.

An API key lets a user's bot or tool get access tokens without a browser: the user creates it
(signed in), the bot trades it for a short-lived token (ExchangeApiKey) carrying the key's scopes.
A service credential is the same idea for the mesh itself: each service holds a secret of its own
and trades it for a token with the "service" role and the sub "service:<name>"; auth knows only
the credentials' hashes, from its configuration.

Secrets are 256 random bits, so a plain SHA-256 is what is stored and looked up: it cannot be
brute-forced, and a deliberately slow hash (bcrypt) would only cost every exchange time and rule
out an indexed lookup by hash.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.tokens import Caller, TokenInvalid

API_KEY_PREFIX = "cpk_"
SERVICE_CREDENTIAL_PREFIX = "cps_"
# Scopes a user's key may carry (the service comment of auth_service.proto lists them).
KNOWN_SCOPES = frozenset({"model:read", "draft:read", "draft:write", "user:read", "user:write"})
MAX_UNREVOKED_KEYS = 20
MAX_NAME_LENGTH = 64
# Characters of the secret shown in listings to tell keys apart ("cpk_" plus 4).
SHOWN_PREFIX_LENGTH = 8
# What each service's token may do: what it calls of its peers, nothing more. A service missing
# here gets the narrowest useful grant (reading the model), never an unscoped token.
SERVICE_SCOPES: Mapping[str, tuple[str, ...]] = {
    "model": ("model:read",),
    "draft": ("model:read", "user:read", "draft:read"),
    "user": ("user:read",),
    "etl": ("model:read",),
    "ingest": ("model:read",),
    "gateway": ("model:read", "user:read", "draft:read"),
}
DEFAULT_SERVICE_SCOPES = ("model:read",)
SERVICE_SUBJECT_PREFIX = "service:"
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QuotaExceeded(FailedPrecondition):
    """A per-user limit on stored things (API keys) is reached."""

    reason = "ERROR_REASON_QUOTA_EXCEEDED"


@dataclass(frozen=True)
class ApiKey:
    """An API key as stored (without its secret, which is never kept)."""

    key_id: str
    owner_user_id: str
    owner_steamid64: int
    name: str
    scopes: tuple[str, ...]
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class NewSecret:
    """A freshly generated secret: the text the owner gets once, and what the store keeps."""

    secret: str
    secret_hash: bytes
    prefix: str


def hash_secret(secret: str) -> bytes:
    """What is stored of an API key or service credential (see the module docstring)."""
    return hashlib.sha256(secret.encode()).digest()


def new_api_key_secret() -> NewSecret:
    """A new random API key."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return NewSecret(secret, hash_secret(secret), secret[:SHOWN_PREFIX_LENGTH])


def new_service_credential() -> str:
    """A new random service credential (for a deployment to provision)."""
    return SERVICE_CREDENTIAL_PREFIX + secrets.token_urlsafe(32)


def check_new_key(caller: Caller, name: str, scopes: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """The (name, scopes) of a key the caller may create, or the error saying why not."""
    if caller.api_key_id:
        # A leaked bot key must not be able to mint more keys (and outlive its own revocation).
        raise PermissionDenied("API keys are created by signed-in users, not with an API-key token")
    name = name.strip()
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise InvalidArgument(f"name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    wanted = tuple(dict.fromkeys(scopes))  # de-duplicated, in the caller's order
    if not wanted:
        raise InvalidArgument("at least one scope is required", field="scopes")
    unknown = sorted(set(wanted) - KNOWN_SCOPES)
    if unknown:
        raise InvalidArgument(
            f"unknown scopes {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}",
            field="scopes",
        )
    return name, wanted


def check_quota(unrevoked: int) -> None:
    """QuotaExceeded when a user already holds the most unrevoked keys allowed."""
    if unrevoked >= MAX_UNREVOKED_KEYS:
        raise QuotaExceeded(
            f"at most {MAX_UNREVOKED_KEYS} unrevoked API keys per user; revoke one first",
            metadata={"limit": str(MAX_UNREVOKED_KEYS)},
        )


def may_revoke(caller: Caller, key: ApiKey | None) -> bool:
    """True if the caller may revoke `key` (its owner, or an admin)."""
    return key is not None and (key.owner_user_id == caller.user_id or caller.has_any_role("admin"))


def check_presented(secret: str) -> None:
    """TokenInvalid unless `secret` is shaped like an API key or a service credential."""
    if not secret.startswith((API_KEY_PREFIX, SERVICE_CREDENTIAL_PREFIX)) or len(secret) < 40:
        raise TokenInvalid("this is not an API key")


def usable(key: ApiKey | None) -> ApiKey:
    """The key if it may be exchanged, else TokenInvalid (unknown or revoked look alike)."""
    if key is None or key.revoked_at is not None:
        raise TokenInvalid("the API key is unknown or revoked")
    return key


@dataclass(frozen=True)
class ServiceCredential:
    """A service the deployment provisioned a credential for."""

    name: str
    scopes: tuple[str, ...]

    @property
    def subject(self) -> str:
        """The sub of its tokens."""
        return SERVICE_SUBJECT_PREFIX + self.name


def parse_service_credentials(text: str) -> dict[bytes, ServiceCredential]:
    """`name=<sha256 hex>` entries (comma- or newline-separated) by hash, as auth accepts them.

    Only hashes are configured, so auth's environment and files never hold a usable secret.
    """
    accepted: dict[bytes, ServiceCredential] = {}
    for raw in re.split(r"[,\n]", text):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, _, digest = entry.partition("=")
        name, digest = name.strip(), digest.strip().lower()
        if not _SERVICE_NAME.match(name) or not _HEX_SHA256.match(digest):
            raise ValueError(f"a service credential entry must be name=<sha256 hex>, got {entry!r}")
        scopes = SERVICE_SCOPES.get(name, DEFAULT_SERVICE_SCOPES)
        accepted[bytes.fromhex(digest)] = ServiceCredential(name, scopes)
    return accepted


def service_credential_entry(name: str, secret: str) -> str:
    """The `name=<sha256 hex>` entry auth needs to accept `secret` as service `name`."""
    return f"{name}={hash_secret(secret).hex()}"
