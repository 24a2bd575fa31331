"""Token checks for HTTP: the FastAPI side of services/common/tokens.py.

The same verifier as the gRPC services (local verification against the cached JWKS). A request
without a token is anonymous; one with a bad token is 401 with a WWW-Authenticate challenge
(RFC 6750), never silently anonymous; a valid token without the role is 403.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import HTTPException, Request

from services.common.errors import CounterpickError, DependencyUnavailable
from services.common.tokens import Caller, KeySet, KeySource, TokenExpired, TokenVerifier

JWKS_CACHE_SECONDS = 300


def _challenge(error: str, description: str) -> dict[str, str]:
    return {"WWW-Authenticate": f'Bearer error="{error}", error_description="{description}"'}


def caller_dependency(verifier: TokenVerifier) -> Callable[[Request], Awaitable[Caller | None]]:
    """A dependency giving the verified caller, or None for an anonymous request."""

    async def optional_caller(request: Request) -> Caller | None:
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(
                401,
                "the Authorization header is not 'Bearer <token>'",
                headers=_challenge("invalid_request", "Bearer token expected"),
            )
        try:
            return await verifier.verify(token.strip())
        except TokenExpired as error:
            raise HTTPException(
                401, error.message, headers=_challenge("invalid_token", "token expired")
            ) from None
        except DependencyUnavailable as error:
            raise HTTPException(503, error.message) from None
        except CounterpickError as error:
            raise HTTPException(
                401, error.message, headers=_challenge("invalid_token", "token invalid")
            ) from None

    return optional_caller


def require(caller: Caller | None, *roles: str) -> Caller:
    """The signed-in caller (401 if anonymous), holding one of `roles` if given (else 403)."""
    if caller is None:
        raise HTTPException(
            401, "this endpoint needs an access token", headers={"WWW-Authenticate": "Bearer"}
        )
    if roles and not caller.has_any_role(*roles):
        raise HTTPException(403, f"this endpoint needs one of the roles {', '.join(roles)}")
    return caller


class JwksCache:
    """The auth service's JWKS document for /.well-known/jwks.json, cached a few minutes."""

    def __init__(self, fetch: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._fetch = fetch
        self._document: dict[str, Any] | None = None
        self._fetched_at = float("-inf")

    async def document(self) -> dict[str, Any]:
        """The current key set; the last good one while auth is unreachable."""
        if time.monotonic() - self._fetched_at > JWKS_CACHE_SECONDS:
            try:
                self._document = await self._fetch()
                self._fetched_at = time.monotonic()
            except Exception as error:
                if self._document is None:
                    raise DependencyUnavailable("auth", f"auth is unreachable: {error}") from error
        assert self._document is not None
        return self._document


def key_source_from(cache: JwksCache) -> KeySource:
    """The verifier's key source, sharing the edge's JWKS cache."""

    async def fetch() -> KeySet:
        return KeySet.from_jwks(await cache.document())

    return fetch
