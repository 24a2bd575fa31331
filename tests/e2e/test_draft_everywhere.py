"""Issue 12, end to end with `counterpick up`: two signed-in captains drive a whole Captains Mode
draft through GraphQL mutations while a GraphQL subscription (graphql-transport-ws), a /ws/draft
overlay client and a gRPC WatchDraft stream watch it. All of them see the same events in the
same order, each sequence once, ending with `completed`; a GraphQL and a /ws watcher that drop
mid-draft and resume with their last sequence miss nothing and repeat nothing. Along the way:
an action out of turn is refused with a stable `extensions.code` and the room goes on, and an
invalid /ws message is answered with an error on a connection that goes on.

Synchronisation is by awaited events only (a watcher's snapshot, a dropped connection, an
applied action); every wait has a generous deadline for a loaded 2-core machine."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from services.cli.up import SERVICES
from services.common.dota_constants import load_constants
from tests.conftest import REDIS_URL, REPO_ROOT, free_port
from tests.rpc import bearer

pytestmark = pytest.mark.e2e

WAIT = 90.0  # seconds for any one awaited thing on a loaded machine
DROP_AT = 8  # the dropping watchers close after the action with this sequence
RESUME_AT = DROP_AT + 4  # ... and come back once the draft is past this sequence
OUT_OF_TURN_AT = 3  # the wrong captain tries to act after this many actions

# A normalised event: (type, sequence, *details), the same tuple whichever transport carried it.
Event = tuple[Any, ...]
STEPS = frozenset({"action", "ban_skipped", "completed", "captain_joined"})

SUBSCRIPTION = """
subscription Watch($id: ID!, $after: Int) {
  draftUpdates(id: $id, resumeAfter: $after) {
    sequence
    snapshot { id sequence completed }
    action { order kind side heroId }
    banSkipped
    captainJoined { userId accountId }
    suggestions { side }
    completed { modelVersion }
  }
}
"""
DRAFT_FIELDS = "id sequence completed nextAction { order kind side }"


@dataclass
class Mesh:
    process: subprocess.Popen[str]
    edge_url: str
    draft_address: str
    state_dir: str


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    state_dir = tmp_path_factory.mktemp("mesh")
    edge_port = free_port()
    argv = [
        sys.executable,
        "-m",
        "services.cli",
        "up",
        "--edge-port",
        str(edge_port),
        "--kafka-port",
        str(free_port()),
        "--state-dir",
        str(state_dir),
        # No suggestions are asserted here: the seed would only load the machine.
        "--no-seed",
    ]
    for name in SERVICES:
        argv += [f"--{name}-port", str(free_port())]
    env = {
        k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "WAREHOUSE_DSN"}
    }
    env["OPENDOTA_BASE_URL"] = f"http://127.0.0.1:{free_port()}/api"  # nowhere: no internet
    env["REDIS_URL"] = REDIS_URL  # this run's own Redis database
    process = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    banner: list[str] = []
    for line in process.stdout:
        banner.append(line)
        if line.startswith("Ctrl-C stops everything"):
            break
    else:
        pytest.fail("counterpick up exited before it was ready:\n" + "".join(banner))
    match = re.search(r"^\s+draft\s+(\S+:\d+)\s", "".join(banner), re.MULTILINE)
    assert match, "no draft address in:\n" + "".join(banner)
    try:
        yield Mesh(process, f"127.0.0.1:{edge_port}", match.group(1), str(state_dir))
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mint_token(mesh: Mesh, account_id: int) -> str:
    """A signed-in user's access token, as `counterpick token` prints it (last line)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "token",
            "--account-id",
            str(account_id),
            "--state-dir",
            mesh.state_dir,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "not registered" not in result.stderr, result.stderr
    return result.stdout.splitlines()[-1]


class GraphQL:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def call(self, token: str, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {token}"},
        )
        answer: dict[str, Any] = response.json()
        return answer

    async def data(self, token: str, query: str, **variables: Any) -> dict[str, Any]:
        answer = await self.call(token, query, **variables)
        assert not answer.get("errors"), answer
        data: dict[str, Any] = answer["data"]
        return data


# -- the three transports, each as a stream of normalised events ----------------------------


def _strip(value: str, prefix: str) -> str:
    return value.removeprefix(prefix)


def from_graphql(update: dict[str, Any]) -> Event:
    sequence = update["sequence"]
    if update["snapshot"] is not None:
        return ("snapshot", sequence)
    if update["action"] is not None:
        action = update["action"]
        return ("action", sequence, action["kind"], action["side"], action["heroId"])
    if update["banSkipped"] is not None:
        return ("ban_skipped", sequence, update["banSkipped"])
    if update["captainJoined"] is not None:
        return ("captain_joined", sequence, update["captainJoined"]["userId"])
    if update["suggestions"] is not None:
        return ("suggestions", sequence, update["suggestions"]["side"])
    if update["completed"] is not None:
        return ("completed", sequence)
    raise AssertionError(f"a draftUpdates message with no event: {update}")


def from_overlay(message: dict[str, Any]) -> Event:
    kind, sequence, data = message["type"], message["sequence"], message["data"]
    if kind == "action":
        action = data["action"]
        return (
            "action",
            sequence,
            _strip(action["kind"], "DRAFT_ACTION_KIND_"),
            _strip(action["side"], "TEAM_SIDE_"),
            action["hero_id"],
        )
    if kind == "ban_skipped":
        return ("ban_skipped", sequence, _strip(data["side"], "TEAM_SIDE_"))
    if kind == "captain_joined":
        return ("captain_joined", sequence, data["user_id"])
    if kind == "suggestions":
        return ("suggestions", sequence, _strip(data["side"], "TEAM_SIDE_"))
    if kind in {"snapshot", "completed"}:
        return (kind, sequence)
    raise AssertionError(f"an unknown /ws event: {message}")


def from_grpc(message: pb.WatchDraftResponse) -> Event:
    kind, sequence = message.WhichOneof("event"), message.sequence
    if kind == "action_applied":
        action = message.action_applied.action
        return (
            "action",
            sequence,
            _strip(c.DraftActionKind.Name(action.kind), "DRAFT_ACTION_KIND_"),
            _strip(c.TeamSide.Name(action.side), "TEAM_SIDE_"),
            action.hero_id,
        )
    if kind == "ban_skipped":
        side = c.TeamSide.Name(message.ban_skipped.side)
        return ("ban_skipped", sequence, _strip(side, "TEAM_SIDE_"))
    if kind == "captain_joined":
        return ("captain_joined", sequence, message.captain_joined.user_id)
    if kind == "suggestions_updated":
        side = c.TeamSide.Name(message.suggestions_updated.side)
        return ("suggestions", sequence, _strip(side, "TEAM_SIDE_"))
    if kind in {"snapshot", "completed"}:
        return (kind, sequence)
    raise AssertionError(f"an unknown WatchDraft event: {message}")


async def receive_json(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        message: dict[str, Any] = json.loads(await ws.recv())
    return message


@dataclass
class Transport:
    """How one kind of watcher connects; `open` yields its events until `completed`."""

    mesh: Mesh
    token: str
    draft_id: str
    # /ws only: `error` frames and `pong`s seen (they are not events).
    errors: list[dict[str, Any]] = field(default_factory=list)
    pongs: int = 0

    @asynccontextmanager
    async def graphql(self, resume_after: int | None) -> AsyncIterator[AsyncIterator[Event]]:
        url = f"ws://{self.mesh.edge_url}/graphql"
        async with connect(
            url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=WAIT
        ) as ws:
            await ws.send(
                json.dumps(
                    {
                        "type": "connection_init",
                        "payload": {"authorization": f"Bearer {self.token}"},
                    }
                )
            )
            assert (await receive_json(ws))["type"] == "connection_ack"
            variables = {"id": self.draft_id, "after": resume_after}
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIPTION, "variables": variables},
                    }
                )
            )

            async def events() -> AsyncIterator[Event]:
                while True:
                    message = await receive_json(ws)
                    if message["type"] == "ping":
                        await ws.send(json.dumps({"type": "pong"}))
                        continue
                    assert message["type"] == "next", message
                    assert message["id"] == "1"
                    assert not message["payload"].get("errors"), message
                    event = from_graphql(message["payload"]["data"]["draftUpdates"])
                    yield event
                    if event[0] == "completed":
                        # The subscription ends with the draft.
                        assert await receive_json(ws) == {"id": "1", "type": "complete"}
                        return

            yield events()

    @asynccontextmanager
    async def overlay(
        self, resume_after: int | None, *, probe: bool = False
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """With `probe`, invalid messages and a ping go out right after subscribing: each gets
        its answer (`errors`, `pongs`), and the connection must go on to `completed`."""
        url = f"ws://{self.mesh.edge_url}/ws/draft/{self.draft_id}"
        async with connect(url, open_timeout=WAIT) as ws:
            await ws.send(json.dumps({"type": "auth", "token": self.token}))
            assert (await receive_json(ws))["type"] == "auth_ok"
            await ws.send(json.dumps({"type": "subscribe", "resume_after": resume_after}))
            subscribed = await receive_json(ws)
            assert subscribed == {
                "type": "subscribed",
                "draft_id": self.draft_id,
                "resume_after": resume_after,
            }
            if probe:
                await ws.send("this is not json")
                await ws.send(json.dumps({"type": "no-such-type"}))
                await ws.send(json.dumps({"type": "subscribe", "resume_after": "yesterday"}))
                await ws.send(json.dumps({"type": "ping"}))

            async def events() -> AsyncIterator[Event]:
                while True:
                    message = await receive_json(ws)
                    if message["type"] == "pong":
                        self.pongs += 1
                        continue
                    if message["type"] == "ping":
                        continue
                    if message["type"] == "error":
                        self.errors.append(message)
                        continue
                    event = from_overlay(message)
                    yield event
                    if event[0] == "completed":
                        # ... then the server closes with 1000.
                        with pytest.raises(ConnectionClosed) as closed:
                            await receive_json(ws)
                        assert closed.value.rcvd is not None
                        assert closed.value.rcvd.code == 1000
                        return

            yield events()

    @asynccontextmanager
    async def grpc_stream(self, resume_after: int | None) -> AsyncIterator[AsyncIterator[Event]]:
        async with grpc.aio.insecure_channel(self.mesh.draft_address) as channel:
            call = pb_grpc.DraftServiceStub(channel).WatchDraft(
                pb.WatchDraftRequest(draft_id=self.draft_id, resume_after_sequence=resume_after),
                metadata=bearer(self.token),
            )

            async def events() -> AsyncIterator[Event]:
                while True:
                    async with asyncio.timeout(WAIT):
                        message = await call.read()
                    assert message is not grpc.aio.EOF, "WatchDraft ended before completed"
                    assert isinstance(message, pb.WatchDraftResponse)
                    event = from_grpc(message)
                    yield event
                    if event[0] == "completed":
                        async with asyncio.timeout(WAIT):
                            assert await call.read() is grpc.aio.EOF
                        assert await call.code() == grpc.StatusCode.OK
                        return

            try:
                yield events()
            finally:
                call.cancel()


Opener = Callable[[int | None], Any]


@dataclass
class Watcher:
    """One watcher: its events over every connection it made, and the connections' bounds."""

    name: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    segments: list[list[Event]] = field(default_factory=list)

    @property
    def events(self) -> list[Event]:
        return [event for segment in self.segments for event in segment]


async def watch(watcher: Watcher, opener: Opener) -> None:
    """Watch from the start (snapshot first) to `completed`."""
    segment: list[Event] = []
    watcher.segments.append(segment)
    async with opener(None) as events:
        async for event in events:
            segment.append(event)
            if event[0] == "snapshot":
                watcher.ready.set()


async def watch_dropping(watcher: Watcher, opener: Opener, resume: asyncio.Event) -> None:
    """Watch from the start, close the connection after action DROP_AT, and once `resume` is
    set reconnect with the last sequence seen and watch to `completed`."""
    first: list[Event] = []
    watcher.segments.append(first)
    async with opener(None) as events:
        async for event in events:
            first.append(event)
            if event[0] == "snapshot":
                watcher.ready.set()
            if event[0] == "action" and event[1] >= DROP_AT:
                break
    watcher.dropped.set()
    await resume.wait()
    second: list[Event] = []
    watcher.segments.append(second)
    async with opener(first[-1][1]) as events:
        async for event in events:
            second.append(event)


async def wait_for(awaitable: Awaitable[Any], what: str) -> Any:
    try:
        async with asyncio.timeout(WAIT):
            return await awaitable
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT} s waiting for {what}")


@pytest.mark.timeout(900)
async def test_a_captains_mode_draft_is_seen_alike_by_every_watcher(mesh: Mesh) -> None:
    started = time.monotonic()
    radiant_token, dire_token, spectator_token = await asyncio.gather(
        *(asyncio.to_thread(mint_token, mesh, account) for account in (70001, 70002, 70003))
    )
    captains = {"RADIANT": radiant_token, "DIRE": dire_token}
    async with httpx.AsyncClient(base_url=f"http://{mesh.edge_url}", timeout=WAIT) as http:
        api = GraphQL(http)
        created = (
            await api.data(
                radiant_token,
                "mutation { createDraft(mode: CAPTAINS_MODE, firstPickSide: RADIANT,"
                " ourSide: RADIANT, creatorSeat: OUR_SIDE, timers: false)"
                f" {{ inviteCode draft {{ {DRAFT_FIELDS} }} }} }}",
            )
        )["createDraft"]
        draft_id = created["draft"]["id"]
        assert created["inviteCode"], created

        transport = Transport(mesh, spectator_token, draft_id)
        openers: dict[str, Opener] = {
            "graphql": transport.graphql,
            "overlay": functools.partial(transport.overlay, probe=True),
            "grpc": transport.grpc_stream,
        }
        transport_of: dict[str, Opener] = {
            "graphql": transport.graphql,
            "overlay": transport.overlay,
        }
        full = {name: Watcher(name) for name in openers}
        dropping = {name: Watcher(f"{name} (drops)") for name in ("graphql", "overlay")}
        resume = asyncio.Event()

        tasks = [
            asyncio.create_task(watch(watcher, openers[name]), name=watcher.name)
            for name, watcher in full.items()
        ] + [
            asyncio.create_task(
                watch_dropping(watcher, transport_of[name], resume), name=watcher.name
            )
            for name, watcher in dropping.items()
        ]
        watchers = [*full.values(), *dropping.values()]
        try:
            for watcher in watchers:
                await wait_for(watcher.ready.wait(), f"{watcher.name}'s snapshot")

            joined = (
                await api.data(
                    dire_token,
                    f"mutation {{ joinDraft(id: {json.dumps(draft_id)},"
                    f" inviteCode: {json.dumps(created['inviteCode'])})"
                    f" {{ side draft {{ {DRAFT_FIELDS} }} }} }}",
                )
            )["joinDraft"]
            assert joined["side"] == "DIRE"
            dire_user = (await api.data(dire_token, "{ me { userId } }"))["me"]["userId"]
            draft = joined["draft"]

            heroes = iter(sorted(load_constants().heroes))
            submitted: list[Event] = []
            while not draft["completed"]:
                turn = draft["nextAction"]
                assert turn is not None, draft
                assert turn["order"] == len(submitted), draft
                action = {"kind": turn["kind"], "side": turn["side"], "heroId": next(heroes)}
                if len(submitted) == OUT_OF_TURN_AT:
                    await check_out_of_turn(api, captains, draft, action)
                answer = await api.data(
                    captains[turn["side"]],
                    "mutation Act($id: ID!, $action: DraftActionInput!, $seq: Int) {"
                    " submitDraftAction(id: $id, action: $action, expectedSequence: $seq)"
                    f" {{ {DRAFT_FIELDS} }} }}",
                    id=draft_id,
                    action=action,
                    seq=draft["sequence"],
                )
                draft = answer["submitDraftAction"]
                assert draft["sequence"] == len(submitted) + 1
                submitted.append(
                    ("action", draft["sequence"], action["kind"], action["side"], action["heroId"])
                )
                if draft["sequence"] == DROP_AT:
                    for watcher in dropping.values():
                        await wait_for(watcher.dropped.wait(), f"{watcher.name} to drop")
                if draft["sequence"] == RESUME_AT:
                    resume.set()
            assert draft["nextAction"] is None
            assert len(submitted) == 24, submitted  # Captains Mode: 14 bans and 10 picks
            assert len(submitted) > RESUME_AT

            await wait_for(asyncio.gather(*tasks), "every watcher to see the draft complete")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        # The room outlived the refused action and holds exactly the submitted draft.
        final = (
            await api.data(
                spectator_token,
                "query Get($id: ID!) { draft(id: $id) {"
                " sequence completed actions { order kind side heroId } } }",
                id=draft_id,
            )
        )["draft"]
        assert final["completed"] is True
        assert final["sequence"] == len(submitted)
        assert [
            ("action", a["order"] + 1, a["kind"], a["side"], a["heroId"]) for a in final["actions"]
        ] == submitted

    last = len(submitted)
    expected: list[Event] = [
        ("captain_joined", 0, dire_user),
        *submitted,
        ("completed", last),
    ]
    for watcher in watchers:
        events = watcher.events
        # A snapshot at the start (sequence 0: nothing happened yet), and nowhere else: the
        # resumed connections get the events they missed, not a fresh snapshot.
        assert events[0] == ("snapshot", 0), (watcher.name, events[:3])
        assert [e for e in events[1:] if e[0] == "snapshot"] == [], (watcher.name, events)
        steps = [e for e in events if e[0] in STEPS]
        assert steps == expected, (watcher.name, steps)
        # Each action sequence exactly once, increasing; `completed` last of all.
        actions = [e[1] for e in steps if e[0] == "action"]
        assert actions == list(range(1, last + 1)), watcher.name
        assert events[-1] == ("completed", last), watcher.name
        # sequence never decreases, whatever the event
        for segment in watcher.segments:
            numbers = [e[1] for e in segment]
            assert numbers == sorted(numbers), (watcher.name, segment)

    for watcher in dropping.values():
        first, second = watcher.segments
        assert first[-1][:2] == ("action", DROP_AT), (watcher.name, first[-1])
        # Resumed after DROP_AT with the draft already past RESUME_AT: the missed actions come
        # first, from DROP_AT + 1 on, none twice.
        resumed_steps = [e for e in second if e[0] in STEPS]
        assert resumed_steps[0][:2] == ("action", DROP_AT + 1), (watcher.name, second[:3])

    # The /ws connection that got the bad messages answered each and went on to `completed`.
    assert [e["code"] for e in transport.errors] == [
        "invalid_message",
        "invalid_message",
        "already_subscribed",
    ], transport.errors
    assert all(e["type"] == "error" and e["message"] for e in transport.errors)
    assert transport.pongs == 1
    seconds = time.monotonic() - started
    suggestions = {w.name: sum(e[0] == "suggestions" for e in w.events) for w in watchers}
    print(f"draft {draft_id}: {last} actions watched five ways in {seconds:.1f} s;", suggestions)


async def check_out_of_turn(
    api: GraphQL, captains: dict[str, str], draft: dict[str, Any], action: dict[str, Any]
) -> None:
    """The captain whose turn it is not tries to act (for either side): a clear error with a
    stable code, and the draft does not move."""
    turn_side = draft["nextAction"]["side"]
    wrong = captains["DIRE" if turn_side == "RADIANT" else "RADIANT"]
    for side in ("RADIANT", "DIRE"):
        answer = await api.call(
            wrong,
            "mutation Act($id: ID!, $action: DraftActionInput!) {"
            " submitDraftAction(id: $id, action: $action) { sequence } }",
            id=draft["id"],
            action={**action, "side": side},
        )
        assert answer.get("data") is None, answer
        [error] = answer["errors"]
        assert error["extensions"]["code"] == "FORBIDDEN", error
        assert "turn" in error["message"], error
        assert error["path"] == ["submitDraftAction"], error
    # The captain of the side to act, for the other side: an illegal action, named as such.
    answer = await api.call(
        captains[turn_side],
        "mutation Act($id: ID!, $action: DraftActionInput!) {"
        " submitDraftAction(id: $id, action: $action) { sequence } }",
        id=draft["id"],
        action={**action, "side": "DIRE" if turn_side == "RADIANT" else "RADIANT"},
    )
    assert answer.get("data") is None, answer
    [error] = answer["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT", error
    assert error["extensions"]["reason"] == "ERROR_REASON_ILLEGAL_DRAFT_ACTION", error
    assert error["extensions"]["field"] == "action.side", error
    now = (
        await api.data(wrong, "query Get($id: ID!) { draft(id: $id) { sequence } }", id=draft["id"])
    )["draft"]
    assert now["sequence"] == draft["sequence"]
