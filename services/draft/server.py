"""gRPC wiring of the draft service: the servicer (protobuf <-> domain) and its server."""

from __future__ import annotations

import gc
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from counterpick.common.v1 import common_pb2
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from services.common.dota_constants import DotaConstants, load_constants
from services.common.dota_proto import bracket_from_proto, side_from_proto, side_to_proto
from services.common.errors import InvalidArgument
from services.common.rate_limit import rate_limiter_from_settings
from services.common.server import GrpcServer, registration
from services.common.stores import redis_client, wait_for
from services.common.tokens import KeySource, require_caller, verifier_from_settings
from services.draft.config import DraftSettings
from services.draft.convert import action_applied_to_proto as _applied
from services.draft.convert import (
    action_from_proto,
    creator_seat_from_proto,
    draft_to_proto,
    kind_from_proto,
    mode_from_proto,
    required_side,
    snapshot_message,
    timers_from_proto,
    watch_message,
)
from services.draft.drafts import NewDraft, utcnow
from services.draft.rooms import Actor
from services.draft.runtime import DraftRuntime, service_metadata
from services.draft.suggestions import MetadataProvider
from services.draft.watch import Entry, Snapshot

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DraftService"].full_name
# Converted WatchDraft messages kept per replica: recent entries of the drafts being watched.
_MESSAGE_CACHE_SIZE = 4096


def _actor() -> Actor:
    caller = require_caller()
    return Actor(caller.user_id, caller.account_id, admin=caller.has_any_role("admin"))


# Draft ids are url-safe base64 (22 characters); anything else never names a draft, and is kept
# out of the Redis keys built from it.
_DRAFT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _draft_id(value: str) -> str:
    if not value:
        raise InvalidArgument("draft_id is required", field="draft_id")
    if _DRAFT_ID.fullmatch(value) is None:
        raise InvalidArgument(
            "draft_id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'", field="draft_id"
        )
    return value


def _account(message: Any) -> int | None:
    return int(message.account_id) if message.HasField("account_id") else None


class DraftServicer(pb_grpc.DraftServiceServicer):
    """counterpick.draft.v1.DraftService."""

    def __init__(self, runtime: DraftRuntime, constants: DotaConstants) -> None:
        self._runtime = runtime
        self._constants = constants
        # WatchDraft messages of recent log entries by draft and event id (ids are per stream):
        # every watcher of a draft on this replica is sent the same entry, converted once
        # (protobuf messages are only read when sent, so one object serves every stream).
        self._messages: OrderedDict[tuple[str, str], pb.WatchDraftResponse] = OrderedDict()

    async def CreateDraft(
        self, request: pb.CreateDraftRequest, context: Any
    ) -> pb.CreateDraftResponse:
        actor = _actor()
        our_side = side_from_proto(request.our_side) if request.HasField("our_side") else None
        if request.HasField("our_side") and our_side is None:
            raise InvalidArgument("our_side must be RADIANT or DIRE when set", field="our_side")
        if request.bracket != common_pb2.SKILL_BRACKET_UNSPECIFIED:
            bracket = bracket_from_proto(request.bracket)
            if bracket is None:
                raise InvalidArgument("bracket is not a known skill bracket", field="bracket")
        else:
            bracket = None
        new = NewDraft(
            mode=mode_from_proto(request.mode),
            patch=request.patch,
            bracket=bracket,
            our_side=our_side,
            account_id=_account(request),
            first_pick=required_side(request.first_pick_side, "first_pick_side"),
            seat=creator_seat_from_proto(request.creator_seat, our_side),
            timers=timers_from_proto(request),
            mirror=request.mirror,
        )
        if new.mirror and new.timers is not None:
            raise InvalidArgument(
                "a mirror draft has no timers: leave timers unset", field="timers"
            )
        document, code, gsi_token = await self._runtime.drafts.create_with_secrets(actor, new)
        return pb.CreateDraftResponse(
            draft=draft_to_proto(document, utcnow()),
            invite_code=code or "",
            gsi_token=gsi_token or "",
        )

    async def JoinDraft(self, request: pb.JoinDraftRequest, context: Any) -> pb.JoinDraftResponse:
        actor = _actor()
        draft_id = _draft_id(request.draft_id)
        if not request.invite_code:
            raise InvalidArgument("invite_code is required", field="invite_code")
        document, side = await self._runtime.drafts.join(
            actor, draft_id, request.invite_code, _account(request)
        )
        return pb.JoinDraftResponse(
            draft=draft_to_proto(document, utcnow()), side=side_to_proto(side)
        )

    async def GetDraft(self, request: pb.GetDraftRequest, context: Any) -> pb.GetDraftResponse:
        require_caller()
        document = await self._runtime.drafts.view(_draft_id(request.draft_id))
        return pb.GetDraftResponse(draft=draft_to_proto(document, utcnow()))

    async def SubmitAction(
        self, request: pb.SubmitActionRequest, context: Any
    ) -> pb.SubmitActionResponse:
        actor = _actor()
        draft_id = _draft_id(request.draft_id)
        action = action_from_proto(request.action)
        expected = request.expected_sequence if request.HasField("expected_sequence") else None
        submitted = await self._runtime.drafts.submit(
            actor, draft_id, action, expected_sequence=expected
        )
        return pb.SubmitActionResponse(
            draft=draft_to_proto(submitted.document, utcnow()), event=_applied(submitted.event)
        )

    async def MirrorGameDraft(
        self, request: pb.MirrorGameDraftRequest, context: Any
    ) -> pb.MirrorGameDraftResponse:
        require_caller()  # the access option admits only services and admins
        draft_id = _draft_id(request.draft_id)
        if not request.gsi_token:
            raise InvalidArgument("gsi_token is required", field="gsi_token")
        actions = [
            action_from_proto(action, field=f"actions[{index}]")
            for index, action in enumerate(request.actions)
        ]
        side = None
        if request.HasField("active_side"):
            side = required_side(request.active_side, "active_side")
        kind = kind_from_proto(request.active_kind) if request.HasField("active_kind") else None
        document, applied = await self._runtime.drafts.mirror(
            draft_id, request.gsi_token, actions, (side, kind)
        )
        return pb.MirrorGameDraftResponse(draft=draft_to_proto(document, utcnow()), applied=applied)

    async def WatchDraft(
        self, request: pb.WatchDraftRequest, context: Any
    ) -> AsyncIterator[pb.WatchDraftResponse]:
        require_caller()
        draft_id = _draft_id(request.draft_id)
        resume = None
        if request.HasField("resume_after_sequence"):
            resume = request.resume_after_sequence
            if resume < 0:
                raise InvalidArgument(
                    "resume_after_sequence must not be negative", field="resume_after_sequence"
                )
        async for item in self._runtime.watch().stream(draft_id, resume):
            if isinstance(item, Snapshot):
                yield snapshot_message(item.document, utcnow())
            else:
                yield self._message(draft_id, item)

    def _message(self, draft_id: str, entry: Entry) -> pb.WatchDraftResponse:
        """The message of a log entry, converted once per replica (bounded cache)."""
        if entry.event_id is None:
            return watch_message(entry.payload)
        key = (draft_id, entry.event_id)
        message = self._messages.get(key)
        if message is None:
            message = self._messages[key] = watch_message(entry.payload)
            if len(self._messages) > _MESSAGE_CACHE_SIZE:
                self._messages.popitem(last=False)
        return message


def build_server(
    settings: DraftSettings,
    key_source: KeySource | None = None,
    metadata: MetadataProvider | None = None,
    *,
    freeze_gc: bool = False,
) -> GrpcServer:
    """The draft server: Redis opens, then the store, hub and sweeper start. Tokens are verified
    against the auth service's JWKS (or `key_source`, for tests); peer calls carry `metadata`
    (a service token; tests pass one). `freeze_gc` (for the process entry point) moves what
    exists after start out of the collector's way."""
    constants = load_constants()
    runtime = DraftRuntime(settings, constants, metadata or service_metadata(settings))
    redis: list[aioredis.Redis] = []

    async def start() -> None:
        redis.append(await _connect_redis(settings))
        await runtime.start(redis[0])
        if freeze_gc:
            # What exists now (modules, protobuf descriptors, the runtime) lives as long as the
            # process: keep the collector from walking it again on every full collection, which
            # with a thousand open streams showed up as delivery latency spikes.
            gc.collect()
            gc.freeze()

    async def close_redis() -> None:
        while redis:
            await redis.pop().aclose()

    server = GrpcServer(
        name="draft",
        settings=settings,
        services=[
            registration(
                DraftServicer(runtime, constants),
                pb_grpc.add_DraftServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
        on_start=[start],
        on_shutdown_begin=[runtime.begin_shutdown],
        on_stop=[runtime.stop, close_redis],
        rate_limiter=rate_limiter_from_settings(settings, settings.redis_url, "draft"),
        verifier=verifier_from_settings(settings, key_source),
    )
    runtime.report_watch_health = lambda ok: server.set_health(f"{SERVICE_NAME}/watch", ok)
    return server


# A socket read or write stuck longer than this fails the call even where no asyncio timeout
# bounds it (the store's calls time out after 2 s, the hub's XREAD after its block time).
REDIS_SOCKET_TIMEOUT_SECONDS = 5.0


async def _connect_redis(settings: DraftSettings) -> aioredis.Redis:
    """The replica's Redis client, with a socket timeout, once Redis answers a PING."""

    async def attempt() -> aioredis.Redis:
        client = redis_client(
            settings.redis_url, socket_timeout_seconds=REDIS_SOCKET_TIMEOUT_SECONDS
        )
        try:
            await client.ping()
        except Exception:
            await client.aclose()
            raise
        return client

    return await wait_for("redis", attempt, timeout_seconds=settings.store_wait_seconds)
