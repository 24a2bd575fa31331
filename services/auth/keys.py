"""The auth service's signing keys: Ed25519 (EdDSA), named by kid, rolled over with overlap.

Every key in the ring is published (JWKS); the newest signs. Rolling over = adding a new key file:
verifiers learn it from the JWKS before it signs anything (their cache refreshes on an unknown
kid), and the old key stays published until every token it signed has expired, then its file is
removed. Keys are PEM files (PKCS#8) in a directory; a development machine gets one generated.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALGORITHM = "EdDSA"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    """One key pair; kid is derived from the public key (RFC 7638 thumbprint)."""

    private_key: Ed25519PrivateKey
    created: float

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def kid(self) -> str:
        """The JWK thumbprint of the public key."""
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": _b64(self.public_bytes)},
            separators=(",", ":"),
            sort_keys=True,
        )
        return _b64(hashlib.sha256(canonical.encode()).digest())[:22]

    def public_jwk(self) -> dict[str, str]:
        """The public key as a JWK."""
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64(self.public_bytes),
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }

    def public_key(self) -> Ed25519PublicKey:
        """The public half."""
        return self.private_key.public_key()


class KeyRing:
    """The published keys; the newest signs."""

    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one signing key")
        self._keys = sorted(keys, key=lambda key: key.created, reverse=True)

    @classmethod
    def load(cls, directory: Path, *, create: bool) -> KeyRing:
        """Every `*.pem` in `directory` (newest file signs); one is generated when none exists
        and `create` is set (development), else that is an error (production)."""
        directory.mkdir(parents=True, exist_ok=True)
        files = sorted(directory.glob("*.pem"))
        if not files:
            if not create:
                raise FileNotFoundError(f"no signing key (*.pem) in {directory}")
            files = [write_new_key(directory)]
        keys = []
        for path in files:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{path} is not an Ed25519 private key")
            keys.append(SigningKey(loaded, path.stat().st_mtime))
        return cls(keys)

    @property
    def signing_key(self) -> SigningKey:
        """The key new tokens are signed with."""
        return self._keys[0]

    @property
    def keys(self) -> list[SigningKey]:
        """Every published key, newest first."""
        return list(self._keys)

    def jwks(self) -> dict[str, Any]:
        """The JWK Set of every published key."""
        return {"keys": [key.public_jwk() for key in self._keys]}


def write_new_key(directory: Path) -> Path:
    """Generate a key into `directory` (mode 0600) and return its path."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = directory / f"{SigningKey(key, 0).kid}.pem"
    path.touch(mode=0o600)
    path.write_bytes(pem)
    return path
