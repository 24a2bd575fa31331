"""POST /gsi/{draft_id} and GET /gsi/{draft_id}/cfg against a real draft service on Redis, with
the GSI samples in COUNTERPICK_DATA_DIR/gsi-samples: the observer's Captains Mode sequence
replayed with its repeats (and once shuffled) builds the draft it shows; every malformed post
is a 4xx and changes nothing; a player's own client (empty draft block) changes nothing."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from gateway.gsi import MAX_BODY_BYTES, gsi_router
from services.common.service_tokens import StaticToken
from tests.auth_keys import SigningKeys
from tests.draft_server import DraftServer, draft_server
from tests.rpc import bearer

SAMPLE_TOKEN = "overlay-token-from-the-room"
SIDES = {"team2": c.TEAM_SIDE_RADIANT, "team3": c.TEAM_SIDE_DIRE}
KINDS = {"pick": c.DRAFT_ACTION_KIND_PICK, "ban": c.DRAFT_ACTION_KIND_BAN}


@pytest.fixture(scope="module")
def samples(data_dir: Path) -> Path:
    path = data_dir / "gsi-samples"
    if not (path / "observer-captains-mode.jsonl").is_file():
        pytest.skip(f"GSI samples not found at {path} (set COUNTERPICK_DATA_DIR)")
    return path


@dataclass
class Edge:
    http: httpx.AsyncClient
    server: DraftServer
    keys: SigningKeys

    async def mirror(self) -> tuple[str, str]:
        created = await self.server.stub.CreateDraft(
            pb.CreateDraftRequest(
                mode=c.DRAFT_MODE_CAPTAINS_MODE,
                first_pick_side=c.TEAM_SIDE_RADIANT,
                patch="7.41",
                mirror=True,
            ),
            metadata=bearer(self.keys.token("user", user_id="caster")),
        )
        return created.draft.draft_id, created.gsi_token

    async def draft(self, draft_id: str) -> pb.Draft:
        response = await self.server.stub.GetDraft(
            pb.GetDraftRequest(draft_id=draft_id), metadata=bearer(self.keys.token("user"))
        )
        return response.draft


@pytest.fixture
async def edge(redis_url: str, tmp_path: Path) -> AsyncIterator[Edge]:
    keys = SigningKeys.create(tmp_path / "keys")
    async with draft_server(redis_url, keys) as server:
        app = FastAPI()
        app.include_router(
            gsi_router(
                tokens=StaticToken(keys.token("service")), draft_channel=lambda: server.channel
            )
        )
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://edge"
        ) as http:
            yield Edge(http, server, keys)


def with_token(line: str, token: str) -> bytes:
    """A sample line with the room's real GSI token in place of the sample's (as text: some
    malformed lines are not JSON)."""
    return line.replace(f'"{SAMPLE_TOKEN}"', json.dumps(token)).encode()


def game_order(lines: list[str]) -> list[tuple[int, int, int]]:
    """The actions as the in-order sequence shows them: what each post adds, in post order
    (each post adds at most one)."""
    seen: set[tuple[int, int, int]] = set()
    order: list[tuple[int, int, int]] = []
    for line in lines:
        draft = json.loads(line)["draft"]
        added = set()
        for team, side in SIDES.items():
            for key, hero in draft.get(team, {}).items():
                if key.endswith("_id") and hero:
                    added.add((KINDS[key.split("_")[0].rstrip("0123456789")], side, hero))
        fresh = added - seen
        assert len(fresh) <= 1
        order.extend(fresh)
        seen |= fresh
    return order


def actions(draft: pb.Draft) -> list[tuple[int, int, int]]:
    return [(a.kind, a.side, a.hero_id) for a in draft.state.actions]


async def test_the_observer_sequence_with_its_repeats_builds_the_draft_it_shows(
    edge: Edge, samples: Path
) -> None:
    lines = (samples / "observer-captains-mode.jsonl").read_text().splitlines()
    draft_id, token = await edge.mirror()
    applied = []
    for line in lines:
        response = await edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token))
        assert response.status_code == 200, response.text
        applied.append(response.json()["applied"])
    draft = await edge.draft(draft_id)
    expected = game_order(lines)
    assert len(expected) == 24
    assert actions(draft) == expected
    assert sum(applied) == 24  # the repeated states applied nothing
    assert draft.completed
    assert draft.sequence == 24
    # Posting the whole sequence again changes nothing.
    for line in lines:
        response = await edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token))
        assert response.json() == {"applied": 0, "sequence": 24}


async def test_the_sequence_shuffled_builds_the_same_heroes_in_each_teams_order(
    edge: Edge, samples: Path
) -> None:
    """Shuffled posts: every post is accepted, out-of-date ones change nothing, and the draft
    ends with the 24 actions, each team's picks and bans in their slot order. The order between
    the teams' actions where one post revealed several at once is not in the payload (see
    gateway/gsi.py); where the shuffled posts reveal them one by one it is the game's."""
    lines = (samples / "observer-captains-mode.jsonl").read_text().splitlines()
    shuffled = lines[:]
    random.Random(12).shuffle(shuffled)
    draft_id, token = await edge.mirror()
    for line in shuffled:
        response = await edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token))
        assert response.status_code == 200, response.text
    draft = await edge.draft(draft_id)
    expected = game_order(lines)
    got = actions(draft)
    assert sorted(got) == sorted(expected)
    for side in SIDES.values():
        for kind in KINDS.values():
            assert [a for a in got if a[:2] == (kind, side)] == [
                a for a in expected if a[:2] == (kind, side)
            ]
    assert draft.completed


async def test_shuffled_posts_that_arrive_together_build_the_games_exact_order(
    edge: Edge, samples: Path
) -> None:
    """Posts delivered late and all at once (a client's retries, a flaky link): the edge holds
    each post for a moment and applies them in the game's order, so the mirror has exactly the
    draft the in-order sequence shows, not just each team's order."""
    lines = (samples / "observer-captains-mode.jsonl").read_text().splitlines()
    shuffled = lines[:]
    random.Random(7).shuffle(shuffled)
    draft_id, token = await edge.mirror()
    responses = await asyncio.gather(
        *(edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token)) for line in shuffled)
    )
    assert [r.status_code for r in responses] == [200] * len(lines)
    assert sum(r.json()["applied"] for r in responses) == 24
    draft = await edge.draft(draft_id)
    assert actions(draft) == game_order(lines)
    assert draft.completed


async def test_malformed_posts_are_4xx_and_change_nothing(edge: Edge, samples: Path) -> None:
    lines = (samples / "observer-captains-mode.jsonl").read_text().splitlines()
    draft_id, token = await edge.mirror()
    for line in lines[:5]:
        assert (
            await edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token))
        ).is_success
    before = await edge.draft(draft_id)
    assert before.sequence == 3
    statuses = {}
    for line in (samples / "malformed.jsonl").read_text().splitlines():
        response = await edge.http.post(f"/gsi/{draft_id}", content=with_token(line, token))
        statuses[line[:60]] = response.status_code
        assert 400 <= response.status_code < 500, (line, response.status_code, response.text)
    assert sorted(statuses.values()) == [400, 400, 401, 403, 422, 422, 422, 422]
    oversized = json.dumps({"auth": {"token": token}, "padding": "x" * MAX_BODY_BYTES})
    assert (await edge.http.post(f"/gsi/{draft_id}", content=oversized)).status_code == 413
    # A state that contradicts the applied actions (another hero in an applied slot).
    contradicting = json.loads(with_token(lines[4], token))
    contradicting["draft"]["team2"]["ban0_id"] = 1
    conflict = await edge.http.post(f"/gsi/{draft_id}", json=contradicting)
    assert conflict.status_code == 409
    unknown = await edge.http.post("/gsi/no-such-draft", content=with_token(lines[4], token))
    assert unknown.status_code == 404
    after = await edge.draft(draft_id)
    assert actions(after) == actions(before)
    assert after.sequence == before.sequence


async def test_a_players_own_client_changes_nothing(edge: Edge, samples: Path) -> None:
    draft_id, token = await edge.mirror()
    body = with_token((samples / "player-hero-selection.json").read_text(), token)
    response = await edge.http.post(f"/gsi/{draft_id}", content=body)
    assert response.status_code == 200
    assert response.json() == {"applied": 0, "sequence": 0}
    assert (await edge.draft(draft_id)).sequence == 0


async def test_the_cfg_file_needs_the_rooms_gsi_token(edge: Edge) -> None:
    draft_id, token = await edge.mirror()
    assert (await edge.http.get(f"/gsi/{draft_id}/cfg")).status_code == 401
    wrong = await edge.http.get(f"/gsi/{draft_id}/cfg", headers={"X-GSI-Token": "nope"})
    assert wrong.status_code == 403
    response = await edge.http.get(f"/gsi/{draft_id}/cfg", headers={"X-GSI-Token": token})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    text: Any = response.text
    assert f'"uri"       "http://edge/gsi/{draft_id}"' in text
    assert f'"token" "{token}"' in text
    assert '"draft" "1"' in text
