"""GraphQL at /graphql against real services: a model with a snapshot and a draft replica.

Queries and mutations go through the edge in-process (httpx over ASGI); the draftUpdates
subscription goes over graphql-transport-ws with Starlette's TestClient, run in a worker thread
so the gRPC servers on the test's event loop keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import ASGITransport, AsyncClient

from gateway.app import create_app
from gateway.clients import MeshClients
from gateway.config import EdgeSettings
from services.auth.tokens import issue_access_token
from tests.auth_keys import AUDIENCE, ISSUER
from tests.conftest import free_port
from tests.contract.test_draft_service import (  # noqa: F401 - module-scoped fixtures
    Model,
    model,
    model_redis,
    replicas,
)

ANTI_MAGE, PUDGE = 1, 14


@dataclass
class Edge:
    client: AsyncClient
    settings: EdgeSettings
    model: Model

    def token(self, user_id: str = "alice", account_id: int = 1001) -> str:
        return self.model.keys.token("user", user_id=user_id, account_id=account_id)

    async def post(self, query: str, token: str | None = None, **variables: Any) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        return response.json()


def edge_settings(model_addr: str, draft_addr: str) -> EdgeSettings:
    addresses = {
        f"{name}_addr": f"127.0.0.1:{free_port()}" for name in ("ingest", "etl", "auth", "user")
    }
    return EdgeSettings.model_validate(
        {"model_addr": model_addr, "draft_addr": draft_addr, "grpc_timeout_seconds": 3, **addresses}
    )


@asynccontextmanager
async def serve(settings: EdgeSettings) -> AsyncIterator[AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://edge") as client,
    ):
        yield client


@pytest.fixture
async def edge(redis_url: str, model: Model) -> AsyncIterator[Edge]:  # noqa: F811
    async with replicas(redis_url, model.keys, model.address, count=1) as running:
        port = running.servers[0].port
        settings = edge_settings(model.address, f"127.0.0.1:{port}")
        async with serve(settings) as client:
            yield Edge(client, settings, model)


def codes(answer: Any) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in answer.get("errors") or []]


# -- queries -----------------------------------------------------------------------------------


async def test_queries_read_the_real_model(edge: Edge) -> None:
    answer = await edge.post(
        """{
          heroes { id localizedName primaryAttribute roles baseWinRate imageUrl }
          hero(id: 1) { localizedName }
          matchups(heroId: 1, limit: 5) { otherHero { localizedName } advantage games }
          synergies(heroId: 1, limit: 5) { allyHero { id } synergy }
          predictWin(draft: {actions: [{kind: PICK, side: RADIANT, heroId: 1}]})
          modelInfo { modelVersion currentPatch snapshotVersion }
        }"""
    )
    assert "errors" not in answer, answer
    data = answer["data"]
    assert len(data["heroes"]) > 100
    assert data["hero"] == {"localizedName": "Anti-Mage"}
    assert all(h["baseWinRate"] is None or 0 <= h["baseWinRate"] <= 1 for h in data["heroes"])
    assert len(data["matchups"]) == 5
    assert data["matchups"][0]["otherHero"]["localizedName"]
    assert 0 < data["predictWin"] < 1
    assert data["modelInfo"]["snapshotVersion"] > 0


async def test_suggest_picks_gives_reasons_in_words(edge: Edge) -> None:
    answer = await edge.post(
        """query($draft: DraftStateInput!) {
          suggestPicks(draft: $draft, side: RADIANT, limit: 5) {
            side winProbability modelVersion
            picks { hero { localizedName } score reasons { kind text value } }
          }
        }""",
        draft={
            "actions": [
                {"kind": "PICK", "side": "DIRE", "heroId": ANTI_MAGE},
                {"kind": "PICK", "side": "RADIANT", "heroId": PUDGE},
            ]
        },
    )
    assert "errors" not in answer, answer
    picks = answer["data"]["suggestPicks"]["picks"]
    assert len(picks) == 5
    texts = [r["text"] for p in picks for r in p["reasons"]]
    assert any(re.fullmatch(r"[+-]\d+(\.\d)? pts vs Anti-Mage \(\d+ games\)", t) for t in texts)
    assert any(re.fullmatch(r"[+-]\d+(\.\d)? pts with Pudge \(\d+ games\)", t) for t in texts)
    for reason in picks[0]["reasons"]:
        assert reason["kind"] in {"hero_strength", "matchup", "synergy"}


async def test_suggest_picks_by_position_and_the_positions_a_team_lacks(edge: Edge) -> None:
    """With a position the ranking and the reasons speak of it; without one the answer says
    where the side's picks play and which positions are still open."""
    answer = await edge.post(
        """query($draft: DraftStateInput!) {
          open: suggestPicks(draft: $draft, side: RADIANT, limit: 3) {
            assignment { hero { id } position frequency }
            openPositions
            picks { inHeroPool }
          }
          carry: suggestPicks(draft: $draft, side: RADIANT, limit: 3, position: CARRY) {
            picks { reasons { kind text } }
          }
        }""",
        draft={"actions": [{"kind": "PICK", "side": "RADIANT", "heroId": PUDGE}]},
    )
    assert "errors" not in answer, answer
    opened = answer["data"]["open"]
    assert [a["hero"]["id"] for a in opened["assignment"]] == [PUDGE]
    assigned = opened["assignment"][0]["position"]
    assert 0 < opened["assignment"][0]["frequency"] <= 1
    assert len(opened["openPositions"]) == 4
    assert assigned not in opened["openPositions"]
    assert all(p["inHeroPool"] is False for p in opened["picks"])  # no account asked
    carry = answer["data"]["carry"]["picks"]
    assert all(any(r["kind"] == "position_fit" for r in p["reasons"]) for p in carry)


# -- a draft through mutations, watched by a subscription --------------------------------------

CREATE = """mutation { createDraft(mode: ALL_PICK_RANKED, firstPickSide: RADIANT,
  creatorSeat: BOTH, ourSide: RADIANT) { draft { id sequence nextAction { kind side } } } }"""
SUBMIT = """mutation($id: ID!, $action: DraftActionInput!) {
  submitDraftAction(id: $id, action: $action) {
    sequence completed actions { hero { localizedName } } nextAction { kind side } } }"""
WATCH = """subscription($id: ID!) { draftUpdates(id: $id) {
  sequence snapshot { id sequence } action { order kind side hero { id localizedName } }
  suggestions { side picks { hero { id } } } completed { modelVersion } } }"""


def drive_a_draft(settings: EdgeSettings, token: str) -> tuple[list[Any], list[Any]]:
    """In a worker thread: create a draft, subscribe to it, act until it completes. Returns the
    submitted actions and the subscription's messages."""
    with TestClient(create_app(settings)) as client:
        headers = {"authorization": f"Bearer {token}"}
        created = client.post("/graphql", json={"query": CREATE}, headers=headers).json()
        draft = created["data"]["createDraft"]["draft"]
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_json(
                {"type": "connection_init", "payload": {"authorization": headers["authorization"]}}
            )
            assert ws.receive_json()["type"] == "connection_ack"
            ws.send_json(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": WATCH, "variables": {"id": draft["id"]}},
                }
            )
            first = ws.receive_json()
            assert first["type"] == "next", first
            messages = [first["payload"]]
            submitted = []
            next_action, hero = draft["nextAction"], 1
            taken: set[int] = set()
            while next_action is not None:
                while hero in taken:
                    hero += 1
                action = {"kind": next_action["kind"], "side": next_action["side"], "heroId": hero}
                answer = client.post(
                    "/graphql",
                    json={"query": SUBMIT, "variables": {"id": draft["id"], "action": action}},
                    headers=headers,
                ).json()
                if answer.get("errors"):  # a hero the model does not know in this patch
                    assert codes(answer) == ["BAD_USER_INPUT"], answer
                    taken.add(hero)
                    continue
                taken.add(hero)
                submitted.append(action)
                next_action = answer["data"]["submitDraftAction"]["nextAction"]
            while not any(m["data"]["draftUpdates"]["completed"] for m in messages):
                message = ws.receive_json()
                assert message["type"] == "next", message
                messages.append(message["payload"])
            ws.send_json({"id": "1", "type": "complete"})
        return submitted, messages


async def test_a_draft_by_mutations_streams_in_order_to_the_subscription(edge: Edge) -> None:
    submitted, messages = await asyncio.to_thread(drive_a_draft, edge.settings, edge.token())
    updates = [m["data"]["draftUpdates"] for m in messages]
    assert updates[0]["snapshot"] is not None
    sequences = [u["sequence"] for u in updates]
    assert sequences == sorted(sequences)
    seen = [
        {
            "kind": u["action"]["kind"],
            "side": u["action"]["side"],
            "heroId": u["action"]["hero"]["id"],
        }
        for u in updates
        if u["action"]
    ]
    assert seen == submitted
    assert len(submitted) >= 10
    assert all(u["action"]["hero"]["localizedName"] for u in updates if u["action"])


# -- errors ------------------------------------------------------------------------------------


async def test_a_malformed_query_is_400_parse_failed(edge: Edge) -> None:
    response = await edge.client.post("/graphql", json={"query": "{ heroes { id "})
    assert response.status_code == 400
    assert codes(response.json()) == ["GRAPHQL_PARSE_FAILED"]


async def test_limits_refuse_deep_aliased_and_costly_queries(edge: Edge) -> None:
    deep = "{ heroes " + "{ a " * 12 + "}" * 13
    answer = await edge.post(deep)
    assert any(e["extensions"].get("limit") == "depth" for e in answer["errors"])
    aliases = "{ " + " ".join(f"h{i}: hero(id: 1) {{ id }}" for i in range(31)) + " }"
    answer = await edge.post(aliases)
    assert answer["errors"][0]["extensions"]["limit"] == "aliases"
    costly = (
        "{ "
        + " ".join(
            f"m{i}: matchups(heroId: 1, limit: 50) "
            "{ otherHero { roles } advantageInterval { lower upper } }"
            for i in range(10)
        )
        + " }"
    )
    response = await edge.client.post("/graphql", json={"query": costly})
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert error["extensions"]["limit"] == "cost"


async def test_an_unknown_hero_is_bad_user_input_with_its_reason(edge: Edge) -> None:
    answer = await edge.post(
        """{ predictWin(draft: {actions: [{kind: PICK, side: RADIANT, heroId: 9999}]}) }"""
    )
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert answer["errors"][0]["extensions"]["reason"] == "ERROR_REASON_UNKNOWN_HERO"


async def test_mutation_refusals_map_to_stable_codes(edge: Edge) -> None:
    # No token: the draft service refuses, the edge says UNAUTHENTICATED.
    answer = await edge.post(CREATE)
    assert codes(answer) == ["UNAUTHENTICATED"]
    # An expired token.
    expired = issue_access_token(
        edge.model.keys.ring,
        issuer=ISSUER,
        audience=AUDIENCE,
        user_id="alice",
        roles=["user"],
        now=int(time.time()) - 7200,
        lifetime_seconds=60,
    ).token
    answer = await edge.post(CREATE, expired)
    assert codes(answer) == ["UNAUTHENTICATED"]
    assert answer["errors"][0]["extensions"]["reason"] == "ERROR_REASON_TOKEN_EXPIRED"
    # An action out of turn: Radiant picks first, Dire tries.
    token = edge.token()
    created = await edge.post(CREATE, token)
    draft_id = created["data"]["createDraft"]["draft"]["id"]
    answer = await edge.post(
        SUBMIT, token, id=draft_id, action={"kind": "PICK", "side": "DIRE", "heroId": 1}
    )
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert answer["errors"][0]["extensions"]["reason"] == "ERROR_REASON_ILLEGAL_DRAFT_ACTION"
    # The draft survives: it still waits for Radiant, nothing was stored.
    answer = await edge.post("query($id: ID!) { draft(id: $id) { sequence } }", token, id=draft_id)
    assert answer["data"]["draft"]["sequence"] == 0


async def test_a_service_down_is_unavailable(model: Model) -> None:  # noqa: F811
    settings = edge_settings(model.address, f"127.0.0.1:{free_port()}")
    async with serve(settings) as client:
        token = model.keys.token("user", user_id="alice")
        response = await client.post(
            "/graphql",
            json={"query": '{ draft(id: "x") { id } }'},
            headers={"authorization": f"Bearer {token}"},
        )
    answer = response.json()
    assert codes(answer) == ["UNAVAILABLE"]
    assert "127.0.0.1" not in answer["errors"][0]["message"]


async def test_an_internal_bug_is_masked_and_logged_with_its_trace_id(
    edge: Edge, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: MeshClients, token: str | None) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(MeshClients, "model_info", broken)
    with caplog.at_level(logging.ERROR, logger="gateway.graphql.errors"):
        answer = await edge.post("{ modelInfo { modelVersion } }")
    error = answer["errors"][0]
    assert error["message"] == "internal error"
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    trace = error["extensions"]["traceId"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace)
    assert "secret internals" not in str(answer)
    assert any(trace in record.getMessage() for record in caplog.records)


async def test_a_captain_drafts_as_their_account_unless_they_opt_out_and_mirrors_get_a_gsi_token(
    edge: Edge,
) -> None:
    fields = "draft { id radiantCaptain { userId accountId } } inviteCode gsiToken"
    mine = await edge.post(
        f"mutation {{ createDraft(mode: CAPTAINS_MODE, firstPickSide: RADIANT, ourSide: RADIANT,"
        f" creatorSeat: OUR_SIDE) {{ {fields} }} }}",
        edge.token(account_id=1001),
    )
    assert "errors" not in mine, mine
    created = mine["data"]["createDraft"]
    # Their side's pick suggestions use their pool and personal scores (account 1001).
    assert created["draft"]["radiantCaptain"] == {"userId": "alice", "accountId": 1001}
    assert created["inviteCode"]
    assert created["gsiToken"] is None
    anonymous_pool = await edge.post(
        "mutation { createDraft(mode: CAPTAINS_MODE, firstPickSide: RADIANT, personalize: false)"
        f" {{ {fields} }} }}",
        edge.token(account_id=1001),
    )
    assert anonymous_pool["data"]["createDraft"]["draft"]["radiantCaptain"]["accountId"] is None
    mirror = await edge.post(
        "mutation { createDraft(mode: CAPTAINS_MODE, firstPickSide: RADIANT, mirror: true)"
        f" {{ {fields} }} }}",
        edge.token(),
    )
    assert "errors" not in mirror, mirror
    assert mirror["data"]["createDraft"]["gsiToken"]
