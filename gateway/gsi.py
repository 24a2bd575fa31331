"""Dota 2 Game State Integration: `POST /gsi/{draft_id}` turns an observer's game client posts
into the actions of a mirror draft, and `GET /gsi/{draft_id}/cfg` gives the client's cfg file.

The draft block carries each team's picks and bans in flat slots (`team2` Radiant, `team3` Dire;
`pickN_id`, `banN_id`; unfilled: absent, 0 or npc_dota_hero_none) but no global order. The
order is reconstructed here, from what changed between posts, not from a mode's step table (the
game decides the order, and it changes between patches):
1. The post is parsed and checked whole (ids are integers of known heroes, no hero twice);
   any fault is a 4xx and nothing is sent on.
2. The draft's applied actions are read (MirrorGameDraft with no actions: it checks the GSI
   token and changes nothing). Slot N of a team's picks (bans) is that team's N-th applied pick
   (ban).
3. A post whose filled slots are all applied is repeated or out of date: nothing to do. A post
   that has every applied slot plus new ones appends the new ones: the applied actions plus the
   new ones are sent to MirrorGameDraft, which appends the suffix atomically (and refuses a
   contradiction, should a concurrent post win the race: then this is re-read and retried).
   A post that disagrees with an applied slot is a 409.
4. New actions of one post are in the game's order when there is one (the client posts every
   change, so a post normally adds one action). Posts of one draft that arrive within
   REORDER_SECONDS of each other (retries, several connections) are applied in the game's
   order, not the network's: a later state of a draft fills every slot an earlier one did, so
   they are sorted by how many slots they fill, then by `provider.timestamp`. When posts were
   lost a post may still add several; the game's order among them is not in the payload, so
   they are interleaved alternating sides, starting with the side that did not act last, each
   side's in its slot order, bans before picks. docs/overlay-protocol.md says so.

The GSI token (the payload's `auth.token`) is the credential of a post; the edge calls
MirrorGameDraft as itself (its service token) and the draft service checks the GSI token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from services.common.dota_constants import load_constants
from services.common.service_tokens import TokenSource

# A full draft post is about 2 KB; the client also sends other blocks the cfg asks for.
MAX_BODY_BYTES = 64 * 1024
# A lost race with a concurrent post of the same game is re-read and retried this many times.
_ATTEMPTS = 3
# How long a post waits for earlier states of the same game that the network delivered late.
# The client itself buffers 0.1 s and throttles to one post per 0.5 s (gsi_cfg), so a quarter
# of a second adds little to what an overlay already sees.
REORDER_SECONDS = 0.25
_SIDES = {"team2": c.TEAM_SIDE_RADIANT, "team3": c.TEAM_SIDE_DIRE}
_ACTIVE = {2: c.TEAM_SIDE_RADIANT, 3: c.TEAM_SIDE_DIRE}
_SLOT = re.compile(r"(pick|ban)(\d{1,2})_id")
_KINDS = {"pick": c.DRAFT_ACTION_KIND_PICK, "ban": c.DRAFT_ACTION_KIND_BAN}
CFG_FILENAME = "gamestate_integration_counterpick.cfg"
_DRAFT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

Slot = tuple[int, int, int]  # (side, kind, slot index)


class GsiRejected(Exception):
    """A post the edge answers with `status` and changes nothing for."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class GamePost:
    """One parsed post: its token, the filled slots, who the game says acts next, and when
    the client sent it (`provider.timestamp`, seconds; None when absent)."""

    token: str
    slots: Mapping[Slot, int]
    active_side: int | None
    active_kind: int | None
    timestamp: int | None = None


def _hero_id(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise GsiRejected(422, "invalid_hero", f"{where} is not a hero id")
    if isinstance(value, str):
        if not value.strip().isdigit():
            raise GsiRejected(422, "invalid_hero", f"{where} is not a hero id")
        value = int(value)
    if value < 0:
        raise GsiRejected(422, "invalid_hero", f"{where} is negative")
    return int(value)


def parse_post(body: bytes, heroes: frozenset[int]) -> GamePost:
    """The post's token and draft; GsiRejected (400/401/422) for anything malformed."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise GsiRejected(400, "invalid_json", "the body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise GsiRejected(400, "invalid_json", "the body is not a JSON object")
    auth = payload.get("auth")
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        raise GsiRejected(401, "unauthenticated", "auth.token (the room's GSI token) is required")
    draft = payload.get("draft", {})
    if not isinstance(draft, dict):
        raise GsiRejected(422, "invalid_draft", "draft is not an object")
    slots = _filled_slots(draft, heroes)
    active = draft.get("activeteam")
    active_side = _ACTIVE.get(active) if isinstance(active, int) else None
    pick = draft.get("pick")
    active_kind = None
    if isinstance(pick, bool) and active_side is not None:
        active_kind = c.DRAFT_ACTION_KIND_PICK if pick else c.DRAFT_ACTION_KIND_BAN
    provider = payload.get("provider")
    sent = provider.get("timestamp") if isinstance(provider, dict) else None
    timestamp = sent if isinstance(sent, int) and not isinstance(sent, bool) else None
    return GamePost(token, slots, active_side, active_kind, timestamp)


def _filled_slots(draft: Mapping[str, Any], heroes: frozenset[int]) -> dict[Slot, int]:
    """The draft block's filled slots, checked: known heroes, none twice, 5 picks at most."""
    slots: dict[Slot, int] = {}
    for team, side in _SIDES.items():
        block = draft.get(team, {})
        if not isinstance(block, dict):
            raise GsiRejected(422, "invalid_draft", f"draft.{team} is not an object")
        for key, value in block.items():
            match = _SLOT.fullmatch(key)
            if match is None:
                continue
            hero = _hero_id(value, f"draft.{team}.{key}")
            class_key = key.removesuffix("_id") + "_class"
            if hero == 0 or block.get(class_key) == "npc_dota_hero_none":
                continue
            if hero not in heroes:
                raise GsiRejected(422, "unknown_hero", f"draft.{team}.{key}: no hero {hero}")
            slots[(side, _KINDS[match.group(1)], int(match.group(2)))] = hero
    seen: dict[int, Slot] = {}
    for slot, hero in slots.items():
        if hero in seen:
            raise GsiRejected(422, "duplicate_hero", f"hero {hero} is in two slots of the draft")
        seen[hero] = slot
    for side in _SIDES.values():
        if sum(1 for s in slots if s[0] == side and s[1] == c.DRAFT_ACTION_KIND_PICK) > 5:
            raise GsiRejected(422, "too_many_picks", "a team has more than 5 picks")
    return slots


def applied_slots(actions: Any) -> dict[Slot, int]:
    """The draft's applied actions by slot: a team's N-th pick (ban) is slot N."""
    counts: dict[tuple[int, int], int] = {}
    slots: dict[Slot, int] = {}
    for action in actions:
        key = (int(action.side), int(action.kind))
        index = counts.get(key, 0)
        counts[key] = index + 1
        slots[(*key, index)] = action.hero_id
    return slots


def new_actions(post: GamePost, applied: Any) -> list[c.DraftAction] | None:
    """The post's actions beyond the applied ones, in order (see the module docstring); None
    for a repeated or out-of-date post. GsiRejected(409) when it contradicts the draft."""
    done = applied_slots(applied)
    for slot, hero in post.slots.items():
        if slot in done and done[slot] != hero:
            raise GsiRejected(409, "conflict", "the game's draft differs from the mirror's")
    fresh = {slot: hero for slot, hero in post.slots.items() if slot not in done}
    if not fresh:
        return None
    if any(slot not in post.slots for slot in done):
        raise GsiRejected(409, "conflict", "the post lacks actions the mirror already has")
    queues: dict[int, list[tuple[Slot, int]]] = {
        side: sorted(
            ((slot, hero) for slot, hero in fresh.items() if slot[0] == side),
            key=lambda item: (item[0][1] != c.DRAFT_ACTION_KIND_BAN, item[0][2]),
        )
        for side in _SIDES.values()
    }
    last_side = applied[-1].side if len(applied) else None
    side = c.TEAM_SIDE_DIRE if last_side == c.TEAM_SIDE_RADIANT else c.TEAM_SIDE_RADIANT
    ordered: list[c.DraftAction] = []
    while queues[c.TEAM_SIDE_RADIANT] or queues[c.TEAM_SIDE_DIRE]:
        if not queues[side]:
            side = c.TEAM_SIDE_DIRE if side == c.TEAM_SIDE_RADIANT else c.TEAM_SIDE_RADIANT
        (slot_side, kind, _), hero = queues[side].pop(0)
        ordered.append(
            c.DraftAction(
                kind=c.DraftActionKind.ValueType(kind),
                side=c.TeamSide.ValueType(slot_side),
                hero_id=hero,
            )
        )
        side = c.TEAM_SIDE_DIRE if side == c.TEAM_SIDE_RADIANT else c.TEAM_SIDE_RADIANT
    return ordered


Applied = tuple[int, int]  # (actions applied, the draft's sequence after the post)


@dataclass
class _Waiting:
    post: GamePost
    arrival: int
    done: asyncio.Future[Applied] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def order(self) -> tuple[int, int, int]:
        """The game's order: fewer filled slots is earlier, then the client's clock."""
        return (len(self.post.slots), self.post.timestamp or 0, self.arrival)


class PostSequencer:
    """Applies each draft's posts one batch at a time: the posts that arrived within `window`
    seconds of the first, in the game's order (_Waiting.order). One worker task per draft
    that has posts waiting; a caller that goes away does not take its post with it."""

    def __init__(self, apply: Callable[[str, GamePost], Awaitable[Applied]], window: float) -> None:
        self._apply = apply
        self._window = window
        self._pending: dict[str, list[_Waiting]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._arrivals = itertools.count()

    async def submit(self, draft_id: str, post: GamePost) -> Applied:
        """The post's outcome once it is applied; GsiRejected as for a post alone."""
        if self._window <= 0:
            return await self._apply(draft_id, post)
        waiting = _Waiting(post, next(self._arrivals))
        self._pending.setdefault(draft_id, []).append(waiting)
        if draft_id not in self._workers:
            self._workers[draft_id] = asyncio.create_task(self._work(draft_id))
        return await asyncio.shield(waiting.done)

    async def _work(self, draft_id: str) -> None:
        batch: list[_Waiting] = []
        try:
            while True:
                await asyncio.sleep(self._window)
                batch = sorted(self._pending.pop(draft_id, []), key=_Waiting.order)
                for waiting in batch:
                    try:
                        waiting.done.set_result(await self._apply(draft_id, waiting.post))
                    except Exception as error:  # the post's own outcome, raised to its caller
                        waiting.done.set_exception(error)
                if draft_id not in self._pending:
                    return
        finally:
            # No await between the last check and here: a post arriving now finds no worker
            # and starts one. Cancelled (the edge stops): nobody waits for ever.
            self._workers.pop(draft_id, None)
            for waiting in [*batch, *self._pending.pop(draft_id, [])]:
                if not waiting.done.done():
                    waiting.done.cancel()


def _rejection(error: grpc.aio.AioRpcError) -> GsiRejected:
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return GsiRejected(403, "forbidden", "the GSI token is not this draft's")
    if code == grpc.StatusCode.NOT_FOUND:
        return GsiRejected(404, "not_found", details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return GsiRejected(422, "invalid_draft", details)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return GsiRejected(409, "conflict", details)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return GsiRejected(429, "rate_limited", details)
    return GsiRejected(503, "unavailable", "the draft service cannot be reached")


def gsi_cfg(uri: str, token: str) -> str:
    """The gamestate_integration cfg a Dota client needs to post to `uri` with `token`."""
    return (
        '"counterpick"\n{\n'
        f'  "uri"       "{uri}"\n'
        '  "timeout"   "5.0"\n  "buffer"    "0.1"\n  "throttle"  "0.5"\n'
        '  "heartbeat" "30.0"\n'
        '  "data" { "provider" "1" "map" "1" "player" "1" "hero" "1" "draft" "1" }\n'
        f'  "auth" {{ "token" "{token}" }}\n}}\n'
    )


class MirrorDrafts:
    """The draft service's MirrorGameDraft as the edge calls it (as itself; the draft service
    checks each post's GSI token)."""

    def __init__(
        self,
        tokens: TokenSource,
        draft_channel: Callable[[], grpc.aio.Channel],
        timeout_seconds: float,
    ) -> None:
        self._tokens = tokens
        self._channel = draft_channel
        self._timeout = timeout_seconds

    async def call(
        self, draft_id: str, token: str, actions: list[c.DraftAction], post: GamePost | None = None
    ) -> pb.MirrorGameDraftResponse:
        """One MirrorGameDraft; GsiRejected for a refusal."""
        request = pb.MirrorGameDraftRequest(draft_id=draft_id, gsi_token=token, actions=actions)
        if post is not None and post.active_side is not None:
            request.active_side = c.TeamSide.ValueType(post.active_side)
        if post is not None and post.active_kind is not None:
            request.active_kind = c.DraftActionKind.ValueType(post.active_kind)
        try:
            return await pb_grpc.DraftServiceStub(self._channel()).MirrorGameDraft(
                request, metadata=await self._tokens.metadata(), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as error:
            raise _rejection(error) from None

    async def apply(self, draft_id: str, post: GamePost) -> Applied:
        """Append what the post adds to the applied actions (module docstring, steps 2-4)."""
        for attempt in range(_ATTEMPTS):
            current = await self.call(draft_id, post.token, [])
            applied = current.draft.state.actions
            fresh = new_actions(post, applied)
            if fresh is None:
                return 0, current.draft.sequence
            try:
                response = await self.call(draft_id, post.token, [*applied, *fresh], post)
            except GsiRejected as rejected:
                # Another edge replica may have appended first: read again and compare.
                if rejected.status == 409 and attempt + 1 < _ATTEMPTS:
                    continue
                raise
            return response.applied, response.draft.sequence
        raise GsiRejected(409, "conflict", "the draft kept changing; post again")


def gsi_router(
    *,
    tokens: TokenSource,
    draft_channel: Callable[[], grpc.aio.Channel],
    timeout_seconds: float = 2.0,
    heroes: frozenset[int] | None = None,
    reorder_seconds: float = REORDER_SECONDS,
) -> APIRouter:
    """The /gsi routes; `draft_channel` is looked up per request (built in the lifespan)."""
    known = heroes if heroes is not None else frozenset(load_constants().heroes)
    router = APIRouter()

    mirror = MirrorDrafts(tokens, draft_channel, timeout_seconds)
    sequencer = PostSequencer(mirror.apply, reorder_seconds)

    def check_draft_id(draft_id: str) -> None:
        if _DRAFT_ID.fullmatch(draft_id) is None:
            raise GsiRejected(404, "not_found", "no such draft")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise GsiRejected(413, "too_large", f"posts are limited to {MAX_BODY_BYTES} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise GsiRejected(413, "too_large", f"posts are limited to {MAX_BODY_BYTES} bytes")
        return bytes(body)

    @router.post("/gsi/{draft_id}", summary="A Dota 2 GSI post for a mirror draft.")
    async def post_state(draft_id: str, request: Request) -> JSONResponse:
        """Apply the game's new picks and bans to the mirror draft (repeats change nothing)."""
        try:
            check_draft_id(draft_id)
            post = parse_post(await read_body(request), known)
            applied, sequence = await sequencer.submit(draft_id, post)
            return JSONResponse({"applied": applied, "sequence": sequence})
        except GsiRejected as rejected:
            headers = {"WWW-Authenticate": "GSI"} if rejected.status == 401 else None
            return JSONResponse(
                {"error": rejected.code, "message": rejected.message},
                status_code=rejected.status,
                headers=headers,
            )

    @router.get("/gsi/{draft_id}/cfg", summary="The Dota 2 GSI cfg file for a mirror draft.")
    async def cfg(
        draft_id: str,
        request: Request,
        x_gsi_token: str | None = Header(default=None),
    ) -> Response:
        """The gamestate_integration cfg for the draft's observer client. Its GSI token goes in
        the X-GSI-Token header (never the URL): only the creator, who CreateDraft gave it to,
        can fetch the file, and the draft service checks it (MirrorGameDraft with no actions)."""
        try:
            check_draft_id(draft_id)
            if not x_gsi_token:
                raise GsiRejected(401, "unauthenticated", "the X-GSI-Token header is required")
            await mirror.call(draft_id, x_gsi_token, [])
        except GsiRejected as rejected:
            return JSONResponse(
                {"error": rejected.code, "message": rejected.message}, status_code=rejected.status
            )
        uri = str(request.url_for("post_state", draft_id=draft_id))
        return PlainTextResponse(
            gsi_cfg(uri, x_gsi_token),
            headers={
                "Content-Disposition": f'attachment; filename="{CFG_FILENAME}"',
                "Cache-Control": "no-store",
            },
        )

    return router
