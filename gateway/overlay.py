"""`/ws/draft/{draft_id}`: the plain JSON WebSocket protocol stream overlays watch a draft with.

The protocol (docs/overlay-protocol.md, schema in docs/overlay-protocol.asyncapi.yaml):
1. the client's FIRST message is `{"type":"auth","token":"<access token>"}` (a token never goes
   in the URL, where proxies and browser history keep it); anything else first, a bad or expired
   token, or no auth within `auth_timeout_seconds` is an `error` and close 1008;
2. `{"type":"auth_ok", ...}` answers; the client sends `{"type":"subscribe","resume_after":N}`
   (N the last sequence it saw, or null). The draft must exist for the caller (GetDraft with the
   caller's own token); then the connection joins the edge's shared DraftFeed and the server
   sends `subscribed` and the draft's events (`snapshot`, `action`, `suggestions`,
   `ban_skipped`, `captain_joined`, `completed`), each with its `sequence`;
3. `{"type":"ping"}` is answered `{"type":"pong"}`; the server sends `{"type":"ping"}` when the
   connection has been quiet for `heartbeat_seconds`;
4. a message that is not valid JSON or not a known message gets `{"type":"error",...}` and the
   connection goes on; a message over `max_message_bytes` closes it with 1009, more than
   `rate_burst` messages in a burst (refilled at `rate_per_second`) closes it with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.websockets import WebSocketState

from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from gateway.draft_feed import DirectDelivery, DraftFeed, FeedError, FeedEvent
from gateway.ws_protocol import FRAME_WRITER, FrameWriter
from services.common.errors import CounterpickError, DependencyUnavailable
from services.common.tokens import Caller, TokenExpired, TokenVerifier

POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
GOING_AWAY = 1001
TRY_AGAIN_LATER = 1013


class OverlaySettings(BaseSettings):
    """Limits of the overlay WebSocket (OVERLAY_* environment variables)."""

    model_config = SettingsConfigDict(env_prefix="OVERLAY_", env_ignore_empty=True, extra="ignore")

    max_message_bytes: int = Field(default=4096, ge=256)
    rate_per_second: float = Field(default=5.0, gt=0)
    rate_burst: int = Field(default=20, ge=1)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    heartbeat_seconds: float = Field(default=20.0, gt=0)


@dataclass
class _Bucket:
    """A token bucket: `burst` messages at once, refilled at `rate` per second."""

    rate: float
    burst: int
    tokens: float = 0.0
    at: float = 0.0

    def __post_init__(self) -> None:
        self.tokens, self.at = float(self.burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class _Closed(Exception):
    """The connection is being closed with this code (after an error message)."""

    def __init__(self, code: int) -> None:
        self.code = code


def _error(code: str, message: str) -> str:
    return json.dumps({"type": "error", "code": code, "message": message})


class _Connection:
    def __init__(self, websocket: WebSocket, settings: OverlaySettings) -> None:
        self.ws = websocket
        self.settings = settings
        self.bucket = _Bucket(settings.rate_per_second, settings.rate_burst)
        self.send_lock = asyncio.Lock()
        self.last_sent = time.monotonic()

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await self.ws.send_text(text)
            self.last_sent = time.monotonic()

    def direct_delivery(self) -> DirectDelivery | None:
        """Writes a feed event's pre-built frame straight to the socket (no task woken, no
        per-connection encoding), when the server offers it (gateway.ws_protocol)."""
        writer = self.ws.scope.get("extensions", {}).get(FRAME_WRITER)
        if not isinstance(writer, FrameWriter):
            return None
        write = writer.write

        def deliver(event: FeedEvent) -> bool:
            if write(event.frame):
                self.last_sent = time.monotonic()
                return True
            return False

        return deliver

    async def error(self, code: str, message: str) -> None:
        await self.send(_error(code, message))

    async def fail(self, close_code: int, code: str, message: str) -> _Closed:
        with contextlib.suppress(Exception):
            await self.error(code, message)
        return _Closed(close_code)

    async def receive(self) -> dict[str, Any] | None:
        """The next client message as a JSON object; None after an `error` for a bad one (the
        connection goes on); raises _Closed for a limit broken, WebSocketDisconnect at the end."""
        frame = await self.ws.receive()
        if frame["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(frame.get("code", 1000))
        data = frame.get("text")
        if data is None:
            raw = frame.get("bytes") or b""
            size = len(raw)
        else:
            size = len(data.encode())
        if size > self.settings.max_message_bytes:
            raise await self.fail(
                MESSAGE_TOO_BIG,
                "message_too_big",
                f"messages are limited to {self.settings.max_message_bytes} bytes",
            )
        if not self.bucket.take():
            raise await self.fail(
                POLICY_VIOLATION,
                "rate_limited",
                f"more than {self.settings.rate_burst} messages in a burst "
                f"(refilled at {self.settings.rate_per_second:g}/s)",
            )
        if data is None:
            await self.error("invalid_message", "messages are JSON text frames")
            return None
        try:
            message = json.loads(data)
        except ValueError:
            await self.error("invalid_message", "the message is not valid JSON")
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error("invalid_message", 'a message is a JSON object with a "type"')
            return None
        return message


class _Endpoint:
    """What every connection of the route shares: the verifier, the feed, the limits."""

    def __init__(
        self,
        verifier: TokenVerifier,
        feed: Callable[[], DraftFeed],
        draft_channel: Callable[[], grpc.aio.Channel],
        limits: OverlaySettings,
        timeout_seconds: float,
    ) -> None:
        self.verifier = verifier
        self.feed = feed
        self.draft_channel = draft_channel
        self.limits = limits
        self.timeout_seconds = timeout_seconds

    async def authenticate(self, conn: _Connection) -> tuple[Caller, str]:
        """The verified caller of the first message, and its token (for GetDraft as them)."""
        try:
            async with asyncio.timeout(self.limits.auth_timeout_seconds):
                message = await conn.receive()
        except TimeoutError:
            raise await conn.fail(
                POLICY_VIOLATION, "unauthenticated", "no auth message in time"
            ) from None
        if message is None or message.get("type") != "auth":
            raise await conn.fail(
                POLICY_VIOLATION,
                "unauthenticated",
                'the first message must be {"type":"auth","token":"..."}',
            )
        token = message.get("token")
        if not isinstance(token, str) or not token.strip():
            raise await conn.fail(POLICY_VIOLATION, "unauthenticated", "auth.token is required")
        try:
            return await self.verifier.verify(token.strip()), token.strip()
        except TokenExpired:
            raise await conn.fail(
                POLICY_VIOLATION, "token_expired", "the access token has expired"
            ) from None
        except DependencyUnavailable as error:
            raise await conn.fail(TRY_AGAIN_LATER, "unavailable", error.message) from None
        except CounterpickError as error:
            raise await conn.fail(POLICY_VIOLATION, "token_invalid", error.message) from None

    async def check_draft(self, conn: _Connection, draft_id: str, token: str) -> None:
        stub = pb_grpc.DraftServiceStub(self.draft_channel())
        try:
            await stub.GetDraft(
                pb.GetDraftRequest(draft_id=draft_id),
                metadata=(("authorization", f"Bearer {token}"),),
                timeout=self.timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):
                raise await conn.fail(
                    POLICY_VIOLATION, "not_found", f"draft {draft_id} does not exist"
                ) from None
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise await conn.fail(
                    POLICY_VIOLATION, "forbidden", error.details() or "not allowed"
                ) from None
            raise await conn.fail(
                TRY_AGAIN_LATER, "unavailable", "the draft service cannot be reached"
            ) from None

    async def subscription_request(self, conn: _Connection) -> int | None:
        """Wait for `subscribe`, answering pings and bad messages on the way."""
        while True:
            message = await conn.receive()
            if message is None:
                continue
            kind = message["type"]
            if kind == "ping":
                await conn.send('{"type":"pong"}')
            elif kind == "pong":
                pass
            elif kind == "subscribe":
                resume = message.get("resume_after")
                if resume is not None and (
                    isinstance(resume, bool) or not isinstance(resume, int) or resume < 0
                ):
                    await conn.error(
                        "invalid_message", "resume_after must be null or an integer >= 0"
                    )
                    continue
                return resume
            elif kind == "auth":
                await conn.error("invalid_message", "already authenticated")
            else:
                await conn.error("invalid_message", f"unknown message type {kind!r}")

    async def read_loop(self, conn: _Connection) -> None:
        while True:
            message = await conn.receive()
            if message is None:
                continue
            kind = message["type"]
            if kind == "ping":
                await conn.send('{"type":"pong"}')
            elif kind == "pong":
                pass
            elif kind == "subscribe":
                await conn.error("already_subscribed", "this connection is subscribed")
            else:
                await conn.error("invalid_message", f"unknown message type {kind!r}")

    async def heartbeat(self, conn: _Connection, caller: Caller) -> None:
        # Sleeps until the next thing is due (the token's expiry or a quiet heartbeat period),
        # not a poll every second: ten thousand idle overlays would be ten thousand wakeups/s.
        period = self.limits.heartbeat_seconds
        while True:
            to_expiry = caller.expires_at - time.time()
            if to_expiry <= 0:
                raise await conn.fail(
                    POLICY_VIOLATION, "token_expired", "the access token has expired"
                )
            quiet = time.monotonic() - conn.last_sent
            if quiet >= period:
                await conn.send('{"type":"ping"}')
                quiet = 0.0
            await asyncio.sleep(max(min(to_expiry, period - quiet), 0.01))

    async def forward(self, conn: _Connection, draft_id: str, resume_after: int | None) -> None:
        try:
            subscription = self.feed().subscribe(draft_id, resume_after, conn.direct_delivery())
            async with subscription as events:
                await conn.send(
                    json.dumps(
                        {"type": "subscribed", "draft_id": draft_id, "resume_after": resume_after}
                    )
                )
                async for event in events:
                    await conn.send(event.text)
        except FeedError as error:
            raise await conn.fail(TRY_AGAIN_LATER, "unavailable", error.message) from None
        raise _Closed(1000)  # after `completed` the stream ends, like WatchDraft's

    async def serve(self, websocket: WebSocket, draft_id: str) -> None:
        """A stream overlay watching a draft (docs/overlay-protocol.md)."""
        await websocket.accept()
        conn = _Connection(websocket, self.limits)
        close_code = 1000
        try:
            caller, token = await self.authenticate(conn)
            await conn.send(
                json.dumps(
                    {"type": "auth_ok", "user_id": caller.user_id, "expires_at": caller.expires_at}
                )
            )
            resume_after = await self.subscription_request(conn)
            await self.check_draft(conn, draft_id, token)
            async with asyncio.TaskGroup() as group:
                group.create_task(self.read_loop(conn))
                group.create_task(self.heartbeat(conn, caller))
                group.create_task(self.forward(conn, draft_id, resume_after))
        except* _Closed as closed:
            close_code = _first_close(closed)
        except* WebSocketDisconnect:
            close_code = 0
        if close_code and websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(close_code)


def overlay_router(
    *,
    verifier: TokenVerifier,
    feed: Callable[[], DraftFeed],
    draft_channel: Callable[[], grpc.aio.Channel],
    settings: OverlaySettings | None = None,
    timeout_seconds: float = 2.0,
) -> APIRouter:
    """The /ws/draft/{draft_id} route. `feed` and `draft_channel` are looked up per connection
    (they are built in the app's lifespan)."""
    endpoint = _Endpoint(
        verifier, feed, draft_channel, settings or OverlaySettings(), timeout_seconds
    )
    router = APIRouter()
    router.add_api_websocket_route("/ws/draft/{draft_id}", endpoint.serve, name="overlay")
    return router


def _first_close(group: BaseExceptionGroup[_Closed]) -> int:
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first.code
