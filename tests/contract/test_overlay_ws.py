"""The /ws/draft/{id} overlay protocol on a real uvicorn, against a real draft service on Redis:
auth in the first message, refusals with an error and close 1008, bad messages answered with
an error on a connection that survives, the size (1009) and rate (1008) limits, subscribe and
the draft's events in order, and resume after a sequence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from gateway.app import create_app
from gateway.config import EdgeSettings
from gateway.draft_feed import DraftFeed
from gateway.overlay import OverlaySettings, overlay_router
from gateway.ws_protocol import EdgeWebSocketProtocol
from services.auth.tokens import issue_access_token
from services.common.dota_constants import load_constants
from services.common.service_tokens import StaticToken
from services.common.tokens import TokenVerifier
from services.draft.config import DraftSettings
from services.draft.server import build_server
from tests.auth_keys import AUDIENCE, ISSUER, SigningKeys
from tests.conftest import free_port
from tests.rpc import bearer

HEROES = sorted(load_constants().heroes)


@dataclass
class Edge:
    url: str
    keys: SigningKeys
    draft: pb_grpc.DraftServiceAsyncStub
    feed: DraftFeed
    edge_protocol: bool

    def ws(self, draft_id: str) -> Any:
        return connect(f"{self.url}/ws/draft/{draft_id}", open_timeout=5)


# The edge's own WebSocket protocol (feed frames written straight to the socket, no deflate on
# the route) and uvicorn's default (everything through ASGI): the protocol is the same on both.
@pytest.fixture(params=["edge-protocol", "uvicorn-default"])
async def edge(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Edge]:
    keys = SigningKeys.create(tmp_path / "keys")
    settings = DraftSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "model_addr": f"127.0.0.1:{free_port()}",  # no model: no suggestions needed here
            "user_addr": f"127.0.0.1:{free_port()}",
            "draft_key_prefix": f"test:overlay:{time.monotonic_ns()}",
            "store_wait_seconds": 2,
        }
    )
    server = build_server(
        settings,
        key_source=keys.source,
        metadata=StaticToken(keys.token("service")).metadata,
    )
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    feed = DraftFeed([], StaticToken(keys.token("service")), channels=[channel])
    verifier = TokenVerifier(
        issuer=ISSUER, audience=AUDIENCE, fetch_keys=keys.source, deny_list=None
    )
    app = FastAPI()
    app.include_router(
        overlay_router(
            verifier=verifier,
            feed=lambda: feed,
            draft_channel=lambda: channel,
            settings=OverlaySettings(
                max_message_bytes=1024, rate_per_second=2, rate_burst=10, heartbeat_seconds=30
            ),
        )
    )
    web_port = free_port()
    web = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=web_port,
            log_level="warning",
            lifespan="off",
            ws=EdgeWebSocketProtocol if request.param == "edge-protocol" else "auto",
        )
    )
    task = asyncio.create_task(web.serve())
    async with asyncio.timeout(10):
        while not web.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.02)
    try:
        yield Edge(
            f"ws://127.0.0.1:{web_port}",
            keys,
            pb_grpc.DraftServiceStub(channel),
            feed,
            request.param == "edge-protocol",
        )
    finally:
        web.should_exit = True
        await task
        await feed.close()
        await channel.close()
        await server.stop(0)


async def create_draft(edge: Edge) -> pb.Draft:
    response = await edge.draft.CreateDraft(
        pb.CreateDraftRequest(
            mode=c.DRAFT_MODE_CAPTAINS_MODE, first_pick_side=c.TEAM_SIDE_RADIANT, patch="7.41"
        ),
        metadata=bearer(edge.keys.token("user", user_id="captain")),
    )
    return response.draft


async def act(edge: Edge, draft: pb.Draft) -> pb.Draft:
    taken = {a.hero_id for a in draft.state.actions}
    hero = next(h for h in HEROES if h not in taken)
    response = await edge.draft.SubmitAction(
        pb.SubmitActionRequest(
            draft_id=draft.draft_id,
            action=c.DraftAction(
                kind=draft.next_action.kind, side=draft.next_action.side, hero_id=hero
            ),
        ),
        metadata=bearer(edge.keys.token("user", user_id="captain")),
    )
    return response.draft


async def receive(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(5):
        return json.loads(await ws.recv())  # type: ignore[no-any-return]


async def closed_with(ws: ClientConnection) -> int:
    async def drain() -> None:
        while True:
            await ws.recv()

    async with asyncio.timeout(5):
        with pytest.raises(ConnectionClosed) as raised:
            await drain()
    assert raised.value.rcvd is not None
    return raised.value.rcvd.code


async def signed_in(edge: Edge, ws: ClientConnection) -> None:
    await ws.send(json.dumps({"type": "auth", "token": edge.keys.token("user", user_id="fan")}))
    assert (await receive(ws))["type"] == "auth_ok"


async def test_subscribe_gets_the_events_in_order_and_resume_misses_nothing(edge: Edge) -> None:
    draft = await create_draft(edge)
    async with edge.ws(draft.draft_id) as ws:
        # The client offers permessage-deflate (as browsers do); the edge's protocol declines
        # it on this route.
        negotiated = [type(e).__name__ for e in ws.protocol.extensions]
        assert negotiated == ([] if edge.edge_protocol else ["PerMessageDeflate"])
        await signed_in(edge, ws)
        await ws.send(json.dumps({"type": "subscribe", "resume_after": None}))
        assert (await receive(ws))["type"] == "subscribed"
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["sequence"]) == ("snapshot", 0)
        assert snapshot["data"]["draft_id"] == draft.draft_id
        for _ in range(3):
            draft = await act(edge, draft)
        seen = [await receive(ws) for _ in range(3)]
        assert [(m["type"], m["sequence"]) for m in seen] == [
            ("action", 1),
            ("action", 2),
            ("action", 3),
        ]
        assert [m["data"]["action"]["hero_id"] for m in seen] == [
            a.hero_id for a in draft.state.actions
        ]
    # The overlay reloads and resumes after the first action it saw.
    async with edge.ws(draft.draft_id) as ws:
        await signed_in(edge, ws)
        await ws.send(json.dumps({"type": "subscribe", "resume_after": 1}))
        assert (await receive(ws))["type"] == "subscribed"
        replay = [await receive(ws) for _ in range(2)]
        assert [(m["type"], m["sequence"]) for m in replay] == [("action", 2), ("action", 3)]
        await ws.send('{"type":"ping"}')
        assert (await receive(ws)) == {"type": "pong"}
    # Both connections shared the edge's one upstream stream.
    assert edge.feed.streams_opened == 1


async def test_auth_must_come_first_and_bad_tokens_are_refused(edge: Edge) -> None:
    draft = await create_draft(edge)
    async with edge.ws(draft.draft_id) as ws:
        await ws.send(json.dumps({"type": "subscribe", "resume_after": None}))
        assert (await receive(ws))["code"] == "unauthenticated"
        assert await closed_with(ws) == 1008
    async with edge.ws(draft.draft_id) as ws:
        await ws.send(json.dumps({"type": "auth"}))
        assert (await receive(ws))["code"] == "unauthenticated"
        assert await closed_with(ws) == 1008
    expired = issue_access_token(
        edge.keys.ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        user_id="fan",
        roles=["user"],
        now=int(time.time()) - 7200,
    ).token
    async with edge.ws(draft.draft_id) as ws:
        await ws.send(json.dumps({"type": "auth", "token": expired}))
        error = await receive(ws)
        assert (error["type"], error["code"]) == ("error", "token_expired")
        assert await closed_with(ws) == 1008
    async with edge.ws(draft.draft_id) as ws:
        await ws.send(json.dumps({"type": "auth", "token": "not-a-jwt"}))
        assert (await receive(ws))["code"] == "token_invalid"
        assert await closed_with(ws) == 1008


async def test_an_unknown_draft_is_an_error(edge: Edge) -> None:
    async with edge.ws("no-such-draft") as ws:
        await signed_in(edge, ws)
        await ws.send(json.dumps({"type": "subscribe", "resume_after": None}))
        assert (await receive(ws))["code"] == "not_found"
        assert await closed_with(ws) == 1008


async def test_a_bad_message_gets_an_error_and_the_connection_survives(edge: Edge) -> None:
    draft = await create_draft(edge)
    async with edge.ws(draft.draft_id) as ws:
        await signed_in(edge, ws)
        for bad in ("not json", "[1,2]", '{"kind":"subscribe"}', '{"type":"dance"}'):
            await ws.send(bad)
            error = await receive(ws)
            assert (error["type"], error["code"]) == ("error", "invalid_message"), bad
        await ws.send(json.dumps({"type": "subscribe", "resume_after": -3}))
        assert (await receive(ws))["code"] == "invalid_message"
        await ws.send(json.dumps({"type": "subscribe", "resume_after": None}))
        assert (await receive(ws))["type"] == "subscribed"
        assert (await receive(ws))["type"] == "snapshot"
        await ws.send(json.dumps({"type": "subscribe", "resume_after": None}))
        assert (await receive(ws))["code"] == "already_subscribed"
        await ws.send('{"type":"ping"}')
        assert (await receive(ws))["type"] == "pong"
        await act(edge, draft)
        assert (await receive(ws))["type"] == "action"


async def test_an_oversized_message_closes_with_1009(edge: Edge) -> None:
    draft = await create_draft(edge)
    async with edge.ws(draft.draft_id) as ws:
        await signed_in(edge, ws)
        await ws.send(json.dumps({"type": "ping", "padding": "x" * 2000}))
        assert (await receive(ws))["code"] == "message_too_big"
        assert await closed_with(ws) == 1009


async def test_too_many_messages_close_with_1008(edge: Edge) -> None:
    draft = await create_draft(edge)
    async with edge.ws(draft.draft_id) as ws:
        await signed_in(edge, ws)
        for _ in range(30):
            with contextlib.suppress(ConnectionClosed):
                await ws.send('{"type":"ping"}')
        messages = []
        with contextlib.suppress(ConnectionClosed):
            async with asyncio.timeout(5):
                while True:
                    messages.append(json.loads(await ws.recv()))
        assert ws.close_code == 1008
        assert messages[-1]["code"] == "rate_limited"
        assert sum(m["type"] == "pong" for m in messages) < 30


def test_the_edge_app_serves_the_overlay_route() -> None:
    with (
        TestClient(create_app(EdgeSettings())) as client,
        client.websocket_connect("/ws/draft/some-draft") as ws,
    ):
        ws.send_text('{"type":"ping"}')
        assert ws.receive_json()["code"] == "unauthenticated"
