"""Service tokens: how one mesh service calls another as itself.

Each service holds a credential of its own (a secret provisioned by the deployment, see
ServiceCredentialSettings) and trades it at auth's ExchangeApiKey for a short-lived access token
with the "service" role and the sub "service:<name>". The token is cached and exchanged again
before it expires, so a call to a peer costs no round trip to auth, and a short auth outage costs
nothing while the cached token is still valid.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from services.common.config import ServiceCredentialSettings, ServiceSettings, TokenSettings
from services.common.errors import DependencyUnavailable

log = logging.getLogger(__name__)
Metadata = tuple[tuple[str, str], ...]
# The token is exchanged again once this share of its lifetime has passed, leaving the rest as
# room for auth to be briefly away.
REFRESH_AT_FRACTION = 0.8
# A cached token this close to its expiry is not sent any more (clock skew, call duration).
EXPIRY_MARGIN_SECONDS = 10.0
# Without a usable cached token, an exchange auth could not answer is retried for this long,
# backing off from the first delay up to the cap: auth may be starting at the same moment as its
# callers (a mesh coming up). Refused credentials are not retried.
EXCHANGE_RETRY_SECONDS = 5.0
EXCHANGE_FIRST_BACKOFF_SECONDS = 0.2
EXCHANGE_MAX_BACKOFF_SECONDS = 1.6


class TokenSource(Protocol):
    """Anything that gives the metadata of an authorized call (ServiceTokens, StaticToken)."""

    async def metadata(self) -> Metadata:
        """`(("authorization", "Bearer <token>"),)`, or `()` to call anonymously."""
        ...


@dataclass(frozen=True)
class StaticToken:
    """One fixed token (an operator's CLI token, a test's)."""

    token: str

    async def metadata(self) -> Metadata:
        """The token as bearer metadata."""
        return (("authorization", f"Bearer {self.token}"),)


@dataclass(frozen=True)
class StaticMetadata:
    """Fixed call metadata, already built (an operator's token, or none)."""

    entries: Metadata

    async def metadata(self) -> Metadata:
        """The entries as given."""
        return self.entries


@dataclass(frozen=True)
class _Cached:
    token: str
    issued_at: float
    expires_at: float

    def refresh_due(self, now: float) -> bool:
        return now >= self.issued_at + REFRESH_AT_FRACTION * (self.expires_at - self.issued_at)

    def usable(self, now: float) -> bool:
        return now < self.expires_at - EXPIRY_MARGIN_SECONDS


def _credential(settings: ServiceSettings) -> str:
    """The credential from the service's settings, else from the environment (settings classes
    of services that do not include ServiceCredentialSettings)."""
    own = settings if isinstance(settings, ServiceCredentialSettings) else None
    source = own or ServiceCredentialSettings()
    if source.service_credential:
        return source.service_credential.strip()
    if source.service_credential_file:
        return Path(source.service_credential_file).read_text().strip()
    return ""


class ServiceTokens:
    """A service's own access token for calls to its peers, exchanged, cached and refreshed."""

    def __init__(
        self,
        *,
        credential: str,
        auth_addr: str,
        timeout_seconds: float = 5.0,
        retry_seconds: float = EXCHANGE_RETRY_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._auth_addr = auth_addr
        self._timeout = timeout_seconds
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._cached: _Cached | None = None
        self._lock: asyncio.Lock | None = None
        self._warned = False

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ServiceTokens:
        """Tokens for the service whose settings these are: its credential (SERVICE_CREDENTIAL
        or SERVICE_CREDENTIAL_FILE) and auth's address (AUTH_ADDR)."""
        auth_addr = (
            settings.auth_addr if isinstance(settings, TokenSettings) else TokenSettings().auth_addr
        )
        return cls(credential=_credential(settings), auth_addr=auth_addr)

    @classmethod
    def from_environment(cls) -> ServiceTokens:
        """Tokens configured by the process environment alone (for clients built without the
        service's settings at hand)."""
        return cls.from_settings(ServiceSettings())

    @property
    def configured(self) -> bool:
        """True if a credential was provisioned."""
        return bool(self._credential)

    async def metadata(self) -> Metadata:
        """`(("authorization", "Bearer <token>"),)` with a valid service token; `()` when no
        credential is provisioned (the call goes out anonymously and the peer decides).

        Raises DependencyUnavailable("auth") when auth cannot be asked (after retrying for
        EXCHANGE_RETRY_SECONDS) and no cached token is still valid. Nothing of a failure is
        kept: the caller's next attempt asks auth again.
        """
        if not self._credential:
            if not self._warned:
                log.warning(
                    "no service credential (SERVICE_CREDENTIAL[_FILE]): calling anonymously"
                )
                self._warned = True
            return ()
        now = self._clock()
        cached = self._cached
        if cached is None or cached.refresh_due(now):
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                cached = self._cached
                if cached is None or cached.refresh_due(self._clock()):
                    cached = await self._renew(cached)
        return (("authorization", f"Bearer {cached.token}"),)

    async def _renew(self, cached: _Cached | None) -> _Cached:
        deadline = time.monotonic() + self._retry_seconds
        backoff = EXCHANGE_FIRST_BACKOFF_SECONDS
        while True:
            try:
                self._cached = await self._exchange()
                return self._cached
            except DependencyUnavailable as error:
                if cached is not None and cached.usable(self._clock()):
                    log.warning("service token renewal failed, using the cached token: %s", error)
                    return cached
                refused = isinstance(error.__cause__, grpc.aio.AioRpcError) and (
                    error.__cause__.code() == grpc.StatusCode.UNAUTHENTICATED
                )
                if refused or time.monotonic() + backoff > deadline:
                    raise
                log.info("auth did not answer the token exchange; retrying: %s", error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, EXCHANGE_MAX_BACKOFF_SECONDS)

    async def _exchange(self) -> _Cached:
        from counterpick.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
        from services.common.channels import open_channel

        issued_at = self._clock()
        try:
            async with open_channel(self._auth_addr) as channel:
                response = await auth_service_pb2_grpc.AuthServiceStub(channel).ExchangeApiKey(
                    auth_service_pb2.ExchangeApiKeyRequest(api_key=self._credential),
                    timeout=self._timeout,
                )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                log.error("auth refused this service's credential: %s", error.details())
            raise DependencyUnavailable(
                "auth", f"no service token could be obtained from auth: {error.details()}"
            ) from error
        return _Cached(response.access_token, issued_at, float(response.access_expires_at.seconds))
