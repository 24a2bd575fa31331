"""Real signing keys and tokens for tests of services that verify callers."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from services.auth.keys import KeyRing
from services.auth.tokens import issue_access_token
from services.common.tokens import STEAM_ID64_BASE, KeySet, KeySource

ISSUER = "counterpick-auth"
AUDIENCE = "counterpick"


@dataclass(frozen=True)
class SigningKeys:
    """A key ring, the key source a service under test verifies with, and a token minter."""

    ring: KeyRing
    # Where the ring's PEM files are, when it was loaded from a directory (an auth process
    # started with AUTH_KEYS_DIR there signs with the same keys).
    directory: Path | None = None

    @classmethod
    def create(cls, directory: Path) -> SigningKeys:
        return cls(KeyRing.load(directory, create=True), directory)

    @property
    def source(self) -> KeySource:
        async def fetch() -> KeySet:
            return KeySet.from_jwks(self.ring.jwks())

        return fetch

    def token(
        self, *roles: str, account_id: int = 0, user_id: str = "u-test", tier: str = "free"
    ) -> str:
        return issue_access_token(
            self.ring,
            issuer=ISSUER,
            audience=AUDIENCE,
            user_id=user_id,
            roles=list(roles) or ["user"],
            now=int(time.time()),
            steamid64=STEAM_ID64_BASE + account_id if account_id else 0,
            tier=tier,
        ).token

    def metadata(self, *roles: str, account_id: int = 0) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token(*roles, account_id=account_id)}"),)


def verifying_env(keys: SigningKeys, directory: Path, redis_url: str) -> dict[str, str]:
    """The environment that lets a service process verify `keys`' tokens without an auth
    process: their public keys as an AUTH_JWKS_FILE, and the Redis of its token deny list."""
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps(keys.ring.jwks()))
    return {"AUTH_JWKS_FILE": str(jwks_file), "REDIS_URL": redis_url}
