"""The edge's own defences, in front of every route: headers, body limit, rate limits, log hygiene.

- Security headers on every HTTP response: a strict Content-Security-Policy (scripts, styles and
  connections from this origin only, no inline script), nosniff, no Referer, no framing, except
  for the overlay view `/overlay/{id}`, which OBS and caster tools embed.
- Bodies larger than `edge_max_body_bytes` are refused with 413, whether announced by
  Content-Length or streamed in chunks.
- Quotas per client address and per bearer token (sliding window in Redis through
  services.common.rate_limit.RateLimiter): 429 with Retry-After. While Redis is down the limiter
  lets requests through, as the services' limiter does.
- Operator endpoints (`/metrics`, the detail of `/readyz`) need the operator token or an admin.
- Access logs lose their query strings: an OpenID callback carries a one-time assertion.
CORS is starlette's CORSMiddleware with the settings' allow-list (`add_security`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.config import EdgeSettings
from services.common.errors import RateLimited
from services.common.rate_limit import Quota, RateLimiter
from services.common.stores import redis_client
from services.common.tokens import Caller

OPERATOR_HEADER = "x-operator-token"
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "object-src 'none'",
    ]
)
# Never counted: probes must answer even when a client floods the edge.
_UNLIMITED_PATHS = frozenset({"/healthz", "/readyz"})


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """The headers every response gets; the overlay view may be framed by any site."""
    embeddable = path.startswith("/overlay/")
    csp = CSP if embeddable else CSP + "; frame-ancestors 'none'"
    headers = [
        (b"content-security-policy", csp.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    ]
    if not embeddable:
        headers.append((b"x-frame-options", b"DENY"))
    return headers


class _BodyTooLarge(Exception):
    pass


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return str(token.strip())
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_json(send: Send, status: int, body: str, extra: list[tuple[bytes, bytes]]) -> None:
    payload = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class EdgeSecurityMiddleware:
    """Pure ASGI (no buffering, streams and WebSockets pass): headers, body limit, quotas."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        limiter: RateLimiter | None,
        per_address: Quota,
        per_token: Quota,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.limiter = limiter
        self.per_address = per_address
        self.per_token = per_token

    async def _check_quotas(self, scope: Scope) -> float | None:
        """Seconds to wait when a quota is used up, else None."""
        if self.limiter is None or scope["path"] in _UNLIMITED_PATHS:
            return None
        client = scope.get("client")
        keys = [(f"addr:{client[0] if client else 'unknown'}", self.per_address)]
        token = _bearer(scope)
        if token is not None:
            # A digest, so neither Redis nor its logs ever hold a usable token.
            digest = hashlib.sha256(token.encode()).hexdigest()[:32]
            keys.append((f"token:{digest}", self.per_token))
        for key, quota in keys:
            try:
                await self.limiter.hit(key, quota)
            except RateLimited as limited:
                return limited.retry_after_seconds
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = security_headers(scope["path"])
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await _send_json(send, 413, '{"error":"request body too large"}', headers)
            return
        wait = await self._check_quotas(scope)
        if wait is not None:
            retry_after = str(max(1, math.ceil(wait))).encode()
            await _send_json(
                send,
                429,
                '{"error":"too many requests"}',
                [*headers, (b"retry-after", retry_after)],
            )
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in headers if n not in present),
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except* _BodyTooLarge:
            # A group when it crossed a task group (BaseHTTPMiddleware) on its way out.
            if not started:
                await _send_json(send, 413, '{"error":"request body too large"}', headers)


def is_operator(settings: EdgeSettings, operator_token: str | None, caller: Caller | None) -> bool:
    """Whether a request may see operator data: the operator token, or an admin's access token."""
    expected = settings.edge_operator_token
    if (
        expected is not None
        and operator_token
        and hmac.compare_digest(expected.get_secret_value().encode(), operator_token.encode())
    ):
        return True
    return caller is not None and caller.has_any_role("admin")


class _DropQueryStrings(logging.Filter):
    """uvicorn's access log line without the query string (one-time OpenID assertions, states)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args: Any = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path = args[2].split("?", 1)[0]
            record.args = (*args[:2], path, *args[3:])
        return True


def add_security(app: FastAPI, settings: EdgeSettings) -> None:
    """Install CORS, the security middleware and the access-log filter on `app`."""
    limiter = None
    if settings.edge_rate_limit_enabled:
        limiter = RateLimiter(
            redis_client(settings.redis_url, connect_timeout_seconds=0.3),
            prefix=settings.edge_rate_limit_prefix(),
            name="edge",
            timeout_seconds=0.3,
        )
    window = settings.edge_rate_limit_window_seconds
    # Added first, so it sits inside the security middleware: preflights get headers and quotas.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins(),
        allow_credentials=False,
        allow_methods=["GET", "POST"],
        allow_headers=["authorization", "content-type"],
        max_age=600,
    )
    app.add_middleware(
        EdgeSecurityMiddleware,
        max_body_bytes=settings.edge_max_body_bytes,
        limiter=limiter,
        per_address=Quota("edge-address", settings.edge_rate_limit_per_address_per_minute, window),
        per_token=Quota("edge-token", settings.edge_rate_limit_per_token_per_minute, window),
    )
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _DropQueryStrings) for f in access.filters):
        access.addFilter(_DropQueryStrings())
