"""DraftService over real gRPC: two draft replicas on one Redis, a model service serving a real
snapshot, and (for personalisation) a user service on PostgreSQL.

Covers the issue's list: a full Captains Mode draft by two captains while watchers on both
replicas stream it (one cut and resumed on the other replica), every illegal action with its
status and reason, 20 racing submitters, timers with sweepers on both replicas, ModelService and
Redis outages, and pick suggestions limited to a captain's hero pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import field_mask_pb2
from google.protobuf.duration_pb2 import Duration

from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.common.dota_constants import load_constants
from services.common.server import GrpcServer
from services.draft.config import DraftSettings
from services.draft.repo import decode_entry, text
from services.draft.runtime import DraftRuntime
from services.draft.server import build_server
from services.etl.repo import Warehouse
from services.model.config import ModelSettings
from services.model.server import build_server as build_model_server
from tests.auth_keys import SigningKeys
from tests.conftest import free_port
from tests.contract.test_model_service import Mesh, draft_table, recompute
from tests.contract.test_user_service import user_service
from tests.rpc import Metadata, bearer, fails, failure
from tests.warehouse_drafts import insert_draft_table

RADIANT, DIRE = c.TEAM_SIDE_RADIANT, c.TEAM_SIDE_DIRE
PICK, BAN = c.DRAFT_ACTION_KIND_PICK, c.DRAFT_ACTION_KIND_BAN
PATCH = "7.41"
HEROES = sorted(load_constants().heroes)
ALICE_ACCOUNT, BOB_ACCOUNT = 1001, 2002


# -- helpers: a private Redis, the model, draft replicas ---------------------------------------


class RedisProcess:
    """A redis-server of the test's own, which it may stop and start again on the same port
    (appendonly, so the data survives the restart)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@dataclass
class Model:
    """A model service with a snapshot, restartable on its port."""

    settings: ModelSettings
    keys: SigningKeys
    server: GrpcServer | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.settings.port}"

    async def start(self) -> None:
        self.server = build_model_server(self.settings, key_source=self.keys.source)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)
            self.server = None


@pytest.fixture(scope="module")
def model_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    redis = RedisProcess(tmp_path_factory.mktemp("model-redis"))
    redis.start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
async def model(
    model_redis: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Model]:
    """A model service whose snapshot comes from planted matches (test_model_service's)."""
    directory = tmp_path_factory.mktemp("model")
    dsn = f"chdb://{directory / 'warehouse'}"
    warehouse = Warehouse.connect(dsn)
    warehouse.migrate()
    insert_draft_table(warehouse, draft_table(6_000, "7.40", 1, seed=1))
    insert_draft_table(warehouse, draft_table(3_000, PATCH, 100_000, seed=2))
    warehouse.close()
    keys = SigningKeys.create(directory / "keys")
    settings = ModelSettings.model_validate(
        {
            "port": free_port(),
            "redis_url": model_redis.url,
            "model_warehouse_dsn": dsn,
            "model_recompute_interval_seconds": 0,
            "model_snapshot_poll_seconds": 0.5,
        }
    )
    served = Model(settings, keys)
    await served.start()
    redis = aioredis.Redis.from_url(model_redis.url)
    channel = grpc.aio.insecure_channel(served.address)
    try:
        await recompute(Mesh(model_grpc.ModelServiceStub(channel), channel, redis, dsn, keys))
        yield served
    finally:
        await channel.close()
        await redis.aclose()
        await served.stop()


def service_tokens(keys: SigningKeys) -> Any:
    async def metadata() -> tuple[tuple[str, str], ...]:
        return keys.metadata("service")

    return metadata


@dataclass
class Replicas:
    """Draft service replicas on one Redis, and callers."""

    keys: SigningKeys
    servers: list[GrpcServer]
    channels: list[grpc.aio.Channel]
    stubs: list[pb_grpc.DraftServiceAsyncStub] = field(default_factory=list)

    def user(self, user_id: str, account_id: int = 0, *roles: str) -> Metadata:
        return bearer(
            self.keys.token(*(roles or ("user",)), account_id=account_id, user_id=user_id)
        )


def draft_settings(
    redis_url: str, prefix: str, model_addr: str, user_addr: str, **overrides: Any
) -> DraftSettings:
    return DraftSettings.model_validate(
        {
            "port": 0,
            "redis_url": redis_url,
            "model_addr": model_addr,
            "user_addr": user_addr,
            "draft_key_prefix": prefix,
            "draft_sweep_interval_seconds": 0.05,
            "draft_peer_timeout_seconds": 2,
            "store_wait_seconds": 2,
            **overrides,
        }
    )


@contextlib.asynccontextmanager
async def replicas(
    redis_url: str,
    keys: SigningKeys,
    model_addr: str,
    *,
    count: int = 2,
    user_addr: str | None = None,
    **overrides: Any,
) -> AsyncIterator[Replicas]:
    prefix = f"test:draft:{time.monotonic_ns()}"
    settings = draft_settings(
        redis_url, prefix, model_addr, user_addr or f"127.0.0.1:{free_port()}", **overrides
    )
    servers = [
        build_server(settings, key_source=keys.source, metadata=service_tokens(keys))
        for _ in range(count)
    ]
    ports = [await server.start() for server in servers]
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        yield Replicas(keys, servers, channels, [pb_grpc.DraftServiceStub(ch) for ch in channels])
    finally:
        for channel in channels:
            await channel.close()
        for server in servers:
            await server.stop(0)


@pytest.fixture
async def mesh(redis_url: str, model: Model) -> AsyncIterator[Replicas]:
    async with replicas(redis_url, model.keys, model.address) as running:
        yield running


def action(kind: int, side: int, hero: int) -> c.DraftAction:
    return c.DraftAction(
        kind=c.DraftActionKind.ValueType(kind), side=c.TeamSide.ValueType(side), hero_id=hero
    )


def free_hero(draft: pb.Draft, skip: int = 0) -> int:
    taken = {a.hero_id for a in draft.state.actions}
    return [h for h in HEROES if h not in taken][skip]


class Watcher:
    """Collects one WatchDraft stream in the background."""

    def __init__(
        self, stub: pb_grpc.DraftServiceAsyncStub, request: pb.WatchDraftRequest, metadata: Metadata
    ) -> None:
        self.messages: list[pb.WatchDraftResponse] = []
        self.arrived = asyncio.Event()
        self.call = stub.WatchDraft(request, metadata=metadata)
        self.task = asyncio.get_running_loop().create_task(self._read())
        self.error: grpc.aio.AioRpcError | None = None

    async def _read(self) -> None:
        try:
            async for message in self.call:
                self.messages.append(message)
                self.arrived.set()
        except grpc.aio.AioRpcError as error:
            self.error = error

    async def until(self, predicate: Any, within: float = 15) -> None:
        async with asyncio.timeout(within):
            while not any(predicate(m) for m in self.messages):
                self.arrived.clear()
                await self.arrived.wait()

    def steps(self) -> list[tuple[int, str]]:
        return [
            (m.sequence, m.WhichOneof("event") or "")
            for m in self.messages
            if m.WhichOneof("event") in ("action_applied", "ban_skipped")
        ]


async def create(
    mesh: Replicas, *, seat: int = pb.CREATOR_SEAT_OUR_SIDE, replica: int = 0, **fields: Any
) -> pb.CreateDraftResponse:
    request = pb.CreateDraftRequest(
        mode=c.DRAFT_MODE_CAPTAINS_MODE,
        patch=PATCH,
        first_pick_side=RADIANT,
        our_side=RADIANT,
        creator_seat=pb.CreatorSeat.ValueType(seat),
        **fields,
    )
    response: pb.CreateDraftResponse = await mesh.stubs[replica].CreateDraft(
        request, metadata=mesh.user("alice", ALICE_ACCOUNT)
    )
    return response


def captain_of(side: int) -> tuple[str, int]:
    return ("alice", ALICE_ACCOUNT) if side == RADIANT else ("bob", BOB_ACCOUNT)


# -- the whole draft ---------------------------------------------------------------------------


async def test_a_full_captains_mode_draft_streams_the_same_to_every_watcher(
    mesh: Replicas,
) -> None:
    created = await create(mesh, account_id=ALICE_ACCOUNT)
    draft_id = created.draft.draft_id
    assert created.invite_code
    assert created.draft.sequence == 0
    assert created.draft.HasField("radiant_captain")
    assert not created.draft.HasField("dire_captain")
    watch = pb.WatchDraftRequest(draft_id=draft_id)
    spectator = mesh.user("carol")
    watchers = [Watcher(mesh.stubs[0], watch, spectator), Watcher(mesh.stubs[1], watch, spectator)]
    cut = Watcher(mesh.stubs[0], watch, spectator)
    for watcher in watchers:
        # Watching from before the join, so the join arrives live (a later snapshot shows it).
        await watcher.until(lambda m: m.HasField("snapshot"))
    joined = await mesh.stubs[1].JoinDraft(
        pb.JoinDraftRequest(
            draft_id=draft_id, invite_code=created.invite_code, account_id=BOB_ACCOUNT
        ),
        metadata=mesh.user("bob", BOB_ACCOUNT),
    )
    assert joined.side == DIRE
    assert joined.draft.dire_captain.user_id == "bob"
    for watcher in watchers:
        await watcher.until(lambda m: m.WhichOneof("event") == "captain_joined")
        # The model's suggestions for the empty draft reach every watcher, whichever replica
        # computed them.
        await watcher.until(lambda m: m.HasField("suggestions_updated"))

    draft = joined.draft
    resumed: Watcher | None = None
    resume_after = 0
    for step in range(24):
        expected = draft.next_action
        user, account = captain_of(expected.side)
        response = await mesh.stubs[step % 2].SubmitAction(
            pb.SubmitActionRequest(
                draft_id=draft_id,
                action=action(expected.kind, expected.side, free_hero(draft)),
                expected_sequence=draft.sequence,
            ),
            metadata=mesh.user(user, account),
        )
        draft = response.draft
        assert response.event.sequence == draft.sequence == step + 1
        if step == 8:
            await cut.until(lambda m: m.sequence >= 5 and m.HasField("action_applied"))
            cut.call.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cut.task
            # What the client saw before the cut is where it resumes.
            resume_after = max(s for s, _ in cut.steps())
        if step == 14:
            resumed = Watcher(
                mesh.stubs[1],
                pb.WatchDraftRequest(draft_id=draft_id, resume_after_sequence=resume_after),
                spectator,
            )
    assert draft.completed
    assert not draft.HasField("next_action")
    assert resumed is not None
    for watcher in [*watchers, resumed]:
        async with asyncio.timeout(20):
            await watcher.task
        assert watcher.error is None
        assert watcher.messages[-1].HasField("completed")
        sequences = [m.sequence for m in watcher.messages]
        assert sequences == sorted(sequences)  # never decreases within a stream
    assert watchers[0].messages[0].HasField("snapshot")
    full = [(s, k) for s, k in watchers[0].steps()]
    assert full == watchers[1].steps() == [(n, "action_applied") for n in range(1, 25)]
    before_cut = cut.steps()
    assert before_cut + resumed.steps() == full  # nothing lost, nothing twice
    assert not resumed.messages[0].HasField("snapshot")
    # The model answered: suggestions for our side came while the draft ran, and the end has
    # Radiant's win probability.
    suggestions = [m for m in watchers[0].messages if m.HasField("suggestions_updated")]
    assert suggestions
    assert all(m.suggestions_updated.side == RADIANT for m in suggestions)
    assert suggestions[0].suggestions_updated.picks
    assert suggestions[0].suggestions_updated.bans
    completed = watchers[1].messages[-1].completed
    assert completed.HasField("radiant_win_probability")
    assert 0 < completed.radiant_win_probability < 1
    # Watching a completed draft: the snapshot, then completed, then OK.
    late = Watcher(mesh.stubs[1], watch, spectator)
    await late.task
    kinds = [m.WhichOneof("event") for m in late.messages]
    assert kinds[0] == "snapshot"
    assert kinds[-1] == "completed"
    assert late.error is None


# -- illegal actions ---------------------------------------------------------------------------


async def test_every_illegal_action_gets_its_status_and_reason(mesh: Replicas) -> None:
    created = await create(mesh)
    draft_id = created.draft.draft_id
    await mesh.stubs[0].JoinDraft(
        pb.JoinDraftRequest(draft_id=draft_id, invite_code=created.invite_code),
        metadata=mesh.user("bob"),
    )
    alice, bob = mesh.user("alice", ALICE_ACCOUNT), mesh.user("bob")
    stub = mesh.stubs[1]

    def submit(act: c.DraftAction, who: Metadata, **extra: Any) -> Any:
        return stub.SubmitAction(
            pb.SubmitActionRequest(draft_id=draft_id, action=act, **extra), metadata=who
        )

    hero = HEROES[0]
    cases = [
        (
            submit(action(BAN, DIRE, hero), alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_ILLEGAL_DRAFT_ACTION",
        ),  # out of turn
        (
            submit(action(PICK, RADIANT, hero), alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_ILLEGAL_DRAFT_ACTION",
        ),  # a pick when a ban is due
        (
            submit(action(BAN, RADIANT, 99_999), alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_UNKNOWN_HERO",
        ),
        (
            submit(action(BAN, RADIANT, hero), bob),
            grpc.StatusCode.PERMISSION_DENIED,
            "ERROR_REASON_PERMISSION_DENIED",
        ),  # the other captain
        (
            submit(action(BAN, RADIANT, hero), mesh.user("carol")),
            grpc.StatusCode.PERMISSION_DENIED,
            "ERROR_REASON_PERMISSION_DENIED",
        ),  # a spectator
        (
            submit(c.DraftAction(side=RADIANT, hero_id=hero), alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            submit(action(BAN, RADIANT, hero), alice, expected_sequence=3),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ERROR_REASON_VERSION_MISMATCH",
        ),
        (
            stub.SubmitAction(
                pb.SubmitActionRequest(draft_id="nope", action=action(BAN, RADIANT, hero)),
                metadata=alice,
            ),
            grpc.StatusCode.NOT_FOUND,
            "ERROR_REASON_NOT_FOUND",
        ),
        (
            # Not a draft id at all: refused before it goes anywhere near a Redis key.
            stub.GetDraft(pb.GetDraftRequest(draft_id="x:*:doc"), metadata=alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            stub.GetDraft(pb.GetDraftRequest(draft_id="a" * 65), metadata=alice),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
        (
            stub.JoinDraft(
                pb.JoinDraftRequest(draft_id=draft_id, invite_code="wrong"),
                metadata=mesh.user("dave"),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ERROR_REASON_SEAT_UNAVAILABLE",
        ),
        (
            stub.JoinDraft(
                pb.JoinDraftRequest(draft_id=draft_id, invite_code=created.invite_code),
                metadata=mesh.user("dave"),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "ERROR_REASON_SEAT_UNAVAILABLE",
        ),  # taken by bob
        (
            mesh.stubs[0].CreateDraft(
                pb.CreateDraftRequest(
                    mode=c.DRAFT_MODE_CAPTAINS_MODE, first_pick_side=RADIANT, account_id=7
                ),
                metadata=alice,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            "ERROR_REASON_PERMISSION_DENIED",
        ),  # not alice's account
        (
            mesh.stubs[0].CreateDraft(
                pb.CreateDraftRequest(
                    mode=c.DRAFT_MODE_CAPTAINS_MODE, first_pick_side=RADIANT, patch="6.00"
                ),
                metadata=alice,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_UNKNOWN_PATCH",
        ),
        (
            mesh.stubs[0].CreateDraft(
                pb.CreateDraftRequest(
                    mode=c.DRAFT_MODE_CAPTAINS_MODE,
                    first_pick_side=RADIANT,
                    creator_seat=pb.CREATOR_SEAT_OUR_SIDE,
                ),
                metadata=alice,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ERROR_REASON_INVALID_ARGUMENT",
        ),
    ]
    for call, code, reason in cases:
        failed = await fails(call)
        assert (failed.code, failed.reason) == (code, reason), failed
    unauthenticated = await fails(stub.GetDraft(pb.GetDraftRequest(draft_id=draft_id)))
    assert unauthenticated.code == grpc.StatusCode.UNAUTHENTICATED

    await submit(action(BAN, RADIANT, hero), alice)
    duplicate = await fails(submit(action(BAN, RADIANT, hero), alice))
    assert (duplicate.code, duplicate.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "ERROR_REASON_DUPLICATE_HERO",
    )
    # An admin may act for either side.
    admin = mesh.user("root", 0, "admin")
    draft = (await stub.GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=admin)).draft
    while not draft.completed:
        expected = draft.next_action
        draft = (await submit(action(expected.kind, expected.side, free_hero(draft)), admin)).draft
    done = await fails(submit(action(PICK, RADIANT, free_hero(draft)), alice))
    assert (done.code, done.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ERROR_REASON_ILLEGAL_DRAFT_ACTION",
    )


async def test_an_expired_draft_is_not_found(mesh: Replicas, redis_url: str) -> None:
    created = await create(mesh)
    draft_id = created.draft.draft_id
    alice = mesh.user("alice", ALICE_ACCOUNT)
    # Two hours pass: the store's expiry removes the draft (forced here on its keys).
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for key in await redis.keys(f"*{draft_id}*"):
            await redis.pexpire(key, 1)
    finally:
        await redis.aclose()
    await asyncio.sleep(0.05)
    for call in (
        mesh.stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice),
        mesh.stubs[1].SubmitAction(
            pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])),
            metadata=alice,
        ),
    ):
        failed = await fails(call)
        assert (failed.code, failed.reason) == (grpc.StatusCode.NOT_FOUND, "ERROR_REASON_NOT_FOUND")
    watch = mesh.stubs[1].WatchDraft(pb.WatchDraftRequest(draft_id=draft_id), metadata=alice)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in watch:
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_of_twenty_racing_submitters_exactly_one_wins(mesh: Replicas) -> None:
    created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
    draft_id = created.draft.draft_id
    alice = mesh.user("alice", ALICE_ACCOUNT)
    await mesh.stubs[0].SubmitAction(
        pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])),
        metadata=alice,
    )
    # Step 2 is Radiant's second ban and step 3 Dire's (7.40: F F S S ...), so once one ban
    # lands every other racer's action is wrong: racers 0-6 send expected_sequence 1, racers
    # 7-13 heroes of their own without it, racers 14-19 one shared hero without it.
    shared = HEROES[30]
    calls = []
    for racer in range(20):
        extra: dict[str, Any] = {"expected_sequence": 1} if racer < 7 else {}
        hero = shared if racer >= 14 else HEROES[racer + 1]
        calls.append(
            mesh.stubs[racer % 2].SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft_id, action=action(BAN, RADIANT, hero), **extra
                ),
                metadata=alice,
            )
        )
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    wins = [o for o in outcomes if isinstance(o, pb.SubmitActionResponse)]
    assert len(wins) == 1
    winner = wins[0].event.action.hero_id
    for racer, outcome in enumerate(outcomes):
        if isinstance(outcome, pb.SubmitActionResponse):
            continue
        assert isinstance(outcome, grpc.aio.AioRpcError)
        reason = failure(outcome).reason
        if racer < 7:
            assert reason == "ERROR_REASON_VERSION_MISMATCH"
        elif racer >= 14 and winner == shared:
            assert reason == "ERROR_REASON_DUPLICATE_HERO"
        else:
            assert reason == "ERROR_REASON_ILLEGAL_DRAFT_ACTION"
    draft = (
        await mesh.stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice)
    ).draft
    assert draft.sequence == 2
    assert [a.hero_id for a in draft.state.actions] == [HEROES[0], winner]


async def test_racing_captains_with_expected_sequence_get_version_mismatch(
    mesh: Replicas,
) -> None:
    # Two captains: once Radiant's second ban lands the turn is Dire's, but every other racer
    # sent expected_sequence 1 and lost a race; it must hear VERSION_MISMATCH, not that it may
    # not act.
    created = await create(mesh)
    draft_id = created.draft.draft_id
    alice = mesh.user("alice", ALICE_ACCOUNT)
    await mesh.stubs[1].JoinDraft(
        pb.JoinDraftRequest(draft_id=draft_id, invite_code=created.invite_code),
        metadata=mesh.user("bob", BOB_ACCOUNT),
    )
    await mesh.stubs[0].SubmitAction(
        pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])),
        metadata=alice,
    )
    outcomes = await asyncio.gather(
        *(
            mesh.stubs[racer % 2].SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft_id,
                    action=action(BAN, RADIANT, HEROES[racer + 1]),
                    expected_sequence=1,
                ),
                metadata=alice,
            )
            for racer in range(10)
        ),
        return_exceptions=True,
    )
    assert sum(1 for o in outcomes if isinstance(o, pb.SubmitActionResponse)) == 1
    for outcome in outcomes:
        if isinstance(outcome, grpc.aio.AioRpcError):
            assert outcome.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert failure(outcome).reason == "ERROR_REASON_VERSION_MISMATCH"
        else:
            assert isinstance(outcome, pb.SubmitActionResponse)


# -- timers ------------------------------------------------------------------------------------


async def test_a_submit_after_the_deadline_before_the_sweep_meets_the_clock(
    redis_url: str, model: Model
) -> None:
    # No sweeper runs in time: Radiant's first ban ran out but is not committed when the ban,
    # sent with the sequence read before the deadline, arrives.
    async with replicas(
        redis_url, model.keys, model.address, count=1, draft_sweep_interval_seconds=60
    ) as mesh:
        created = await create(
            mesh,
            seat=pb.CREATOR_SEAT_BOTH,
            timers=pb.DraftTimers(step_time=Duration(seconds=1), reserve_time=Duration()),
        )
        draft_id = created.draft.draft_id
        alice = mesh.user("alice", ALICE_ACCOUNT)
        assert created.draft.sequence == 0
        await asyncio.sleep(1.1)
        late = await fails(
            mesh.stubs[0].SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0]), expected_sequence=0
                ),
                metadata=alice,
            )
        )
        assert late.reason == "ERROR_REASON_VERSION_MISMATCH"
        # GetDraft shows the draft as the clock left it: re-read, and the ban meets step 1.
        draft = (
            await mesh.stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice)
        ).draft
        assert draft.sequence == 1
        acted = await mesh.stubs[0].SubmitAction(
            pb.SubmitActionRequest(
                draft_id=draft_id,
                action=action(BAN, RADIANT, HEROES[0]),
                expected_sequence=draft.sequence,
            ),
            metadata=alice,
        )
        assert acted.event.sequence == 2
        assert acted.event.action.order == 0


async def log_entries(redis_url: str, draft_id: str) -> list[dict[str, Any]]:
    """The draft's event log as stored (both replicas share one store)."""
    redis = aioredis.Redis.from_url(redis_url)
    try:
        keys = [text(key) for key in await redis.keys(f"*{draft_id}:events")]
        assert len(keys) == 1
        entries = await redis.xrange(keys[0])
    finally:
        await redis.aclose()
    return [decode_entry(entry_id, fields).payload for entry_id, fields in entries or []]


async def test_timers_run_the_reserve_down_and_each_timeout_happens_once(
    mesh: Replicas, redis_url: str
) -> None:
    step, _reserve = 1.0, 0.5
    created = await create(
        mesh,
        seat=pb.CREATOR_SEAT_BOTH,
        timers=pb.DraftTimers(
            step_time=Duration(seconds=1),
            reserve_time=Duration(nanos=500_000_000),
        ),
    )
    draft = created.draft
    draft_id = draft.draft_id
    alice = mesh.user("alice", ALICE_ACCOUNT)
    assert draft.clock.side == RADIANT
    assert draft.clock.radiant_reserve.ToNanoseconds() == draft.clock.dire_reserve.ToNanoseconds()
    assert draft.clock.radiant_reserve.ToNanoseconds() == 500_000_000
    assert draft.next_action.deadline.ToNanoseconds() - draft.created_at.ToNanoseconds() == (
        1_500_000_000
    )
    # Radiant's first ban comes 0.2 s into its reserve: 0.3 s of it are left.
    await asyncio.sleep(step + 0.2)
    acted = await mesh.stubs[0].SubmitAction(
        pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])),
        metadata=alice,
    )
    left = acted.draft.clock.radiant_reserve.ToNanoseconds() / 1e9
    assert 0.2 <= left <= 0.3
    assert acted.event.clock.radiant_reserve == acted.draft.clock.radiant_reserve
    # Radiant's second ban is missed: after 1 s + its 0.3 s the sweepers skip it, once.
    watcher = Watcher(mesh.stubs[1], pb.WatchDraftRequest(draft_id=draft_id), alice)
    await watcher.until(lambda m: m.HasField("ban_skipped"), within=5)
    skipped = next(m for m in watcher.messages if m.HasField("ban_skipped")).ban_skipped
    assert skipped.side == RADIANT
    assert skipped.sequence == 2
    draft = (
        await mesh.stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice)
    ).draft
    assert draft.sequence == 2
    assert draft.clock.radiant_reserve.ToNanoseconds() == 0
    # Dire's two bans, then Radiant's, Dire's and Radiant's... until the first pick: let it time
    # out (Radiant has no reserve left, so 1 s) into a random hero.
    while draft.next_action.kind == BAN:
        expected = draft.next_action
        draft = (
            await mesh.stubs[1].SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft_id,
                    action=action(BAN, expected.side, free_hero(draft, 40)),
                    expected_sequence=draft.sequence,
                ),
                metadata=alice,
            )
        ).draft
    picking = draft.sequence
    await watcher.until(
        lambda m: m.HasField("action_applied") and m.action_applied.timed_out, within=5
    )
    timed = next(m for m in watcher.messages if m.action_applied.timed_out).action_applied
    assert timed.action.kind == PICK
    assert timed.sequence == picking + 1
    assert timed.action.hero_id in HEROES
    await asyncio.sleep(0.3)  # both sweepers had their chances to apply it again
    entries = await log_entries(redis_url, draft_id)
    steps = [e for e in entries if e["type"] in ("action_applied", "ban_skipped")]
    assert [e["sequence"] for e in steps] == list(range(1, len(steps) + 1))
    assert sum(1 for e in steps if e["type"] == "ban_skipped") == 1
    assert sum(1 for e in steps if e["type"] == "action_applied" and e["action"]["timed_out"]) >= 1
    watcher.call.cancel()


async def test_a_draft_without_timers_never_times_out(mesh: Replicas) -> None:
    created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
    assert not created.draft.HasField("clock")
    assert not created.draft.HasField("timers")
    assert not created.draft.next_action.HasField("deadline")
    out_of_range = await fails(
        create(mesh, timers=pb.DraftTimers(step_time=Duration(nanos=300_000_000)))
    )
    assert out_of_range.code == grpc.StatusCode.INVALID_ARGUMENT


# -- outages -----------------------------------------------------------------------------------


async def test_drafts_go_on_while_the_model_is_down_and_suggestions_come_back(
    mesh: Replicas, model: Model
) -> None:
    created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
    draft_id = created.draft.draft_id
    alice = mesh.user("alice", ALICE_ACCOUNT)
    watcher = Watcher(mesh.stubs[1], pb.WatchDraftRequest(draft_id=draft_id), alice)
    await watcher.until(lambda m: m.HasField("suggestions_updated") and m.sequence == 0)
    await model.stop()
    try:
        draft = created.draft
        for _ in range(3):
            expected = draft.next_action
            draft = (
                await mesh.stubs[0].SubmitAction(
                    pb.SubmitActionRequest(
                        draft_id=draft_id,
                        action=action(expected.kind, expected.side, free_hero(draft)),
                    ),
                    metadata=alice,
                )
            ).draft
        await watcher.until(lambda m: m.sequence == 3 and m.HasField("action_applied"))
        await asyncio.sleep(0.5)
        assert not [
            m for m in watcher.messages if m.HasField("suggestions_updated") and m.sequence > 0
        ]
    finally:
        await model.start()
    # Without another action the retry loop brings them back for the current sequence.
    await watcher.until(lambda m: m.HasField("suggestions_updated") and m.sequence == 3, 20)
    watcher.call.cancel()


async def test_redis_down_is_unavailable_and_the_service_recovers(
    tmp_path: Path, model: Model
) -> None:
    private = RedisProcess(tmp_path / "redis")
    private.start()
    try:
        async with replicas(private.url, model.keys, model.address, count=1) as mesh:
            alice = mesh.user("alice", ALICE_ACCOUNT)
            created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
            draft_id = created.draft.draft_id
            private.stop()
            for call in (
                mesh.stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice),
                create(mesh),
            ):
                failed = await fails(call)
                assert failed.code == grpc.StatusCode.UNAVAILABLE
                assert failed.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"
                assert failed.metadata["dependency"] == "redis"
            private.start()
            async with asyncio.timeout(15):
                while True:
                    try:
                        got = await mesh.stubs[0].GetDraft(
                            pb.GetDraftRequest(draft_id=draft_id), metadata=alice
                        )
                        break
                    except grpc.aio.AioRpcError as error:
                        if error.code() != grpc.StatusCode.UNAVAILABLE:
                            raise
                        await asyncio.sleep(0.2)
            assert got.draft.draft_id == draft_id
            acted = await mesh.stubs[0].SubmitAction(
                pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])),
                metadata=alice,
            )
            assert acted.draft.sequence == 1
    finally:
        private.stop()


async def test_a_stuck_redis_fails_calls_fast_and_watchers_carry_on(
    tmp_path: Path, model: Model
) -> None:
    # A Redis that accepts connections but does not answer (SIGSTOP) while a watcher streams:
    # SubmitAction and a new WatchDraft fail with UNAVAILABLE within the store's timeout, and
    # once Redis answers the watcher gets what comes next without reconnecting.
    private = RedisProcess(tmp_path / "redis")
    private.start()
    assert private.process is not None
    pid = private.process.pid
    try:
        async with replicas(private.url, model.keys, model.address, count=1) as mesh:
            alice = mesh.user("alice", ALICE_ACCOUNT)
            created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
            draft_id = created.draft.draft_id
            watcher = Watcher(mesh.stubs[0], pb.WatchDraftRequest(draft_id=draft_id), alice)
            await watcher.until(lambda m: m.HasField("snapshot"))
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                submit = await fails(
                    mesh.stubs[0].SubmitAction(
                        pb.SubmitActionRequest(
                            draft_id=draft_id, action=action(BAN, RADIANT, HEROES[0])
                        ),
                        metadata=alice,
                        timeout=10,
                    )
                )
                assert submit.code == grpc.StatusCode.UNAVAILABLE
                assert submit.metadata["dependency"] == "redis"
                late = Watcher(mesh.stubs[0], pb.WatchDraftRequest(draft_id=draft_id), alice)
                await late.task
                assert late.error is not None
                assert late.error.code() == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() - started < 8
                await asyncio.sleep(1)  # the hub's reader times out and retries meanwhile
            finally:
                os.kill(pid, signal.SIGCONT)
            acted = await mesh.stubs[0].SubmitAction(
                pb.SubmitActionRequest(draft_id=draft_id, action=action(BAN, RADIANT, HEROES[1])),
                metadata=alice,
            )
            assert acted.draft.sequence == 1
            await watcher.until(lambda m: m.HasField("action_applied") and m.sequence == 1)
            assert watcher.error is None
            watcher.call.cancel()
    finally:
        os.kill(pid, signal.SIGCONT)
        private.stop()


async def test_shutdown_ends_open_watches_at_once_with_unavailable(
    redis_url: str, model: Model
) -> None:
    # A graceful stop must not wait its whole grace period for each open WatchDraft: watchers
    # get UNAVAILABLE (this replica is shutting down) at once and reconnect elsewhere.
    async with replicas(
        redis_url, model.keys, model.address, count=1, shutdown_grace_seconds=10
    ) as mesh:
        alice = mesh.user("alice", ALICE_ACCOUNT)
        created = await create(mesh, seat=pb.CREATOR_SEAT_BOTH)
        watchers = [
            Watcher(mesh.stubs[0], pb.WatchDraftRequest(draft_id=created.draft.draft_id), alice)
            for _ in range(3)
        ]
        for watcher in watchers:
            await watcher.until(lambda m: m.HasField("snapshot"))
        started = time.monotonic()
        await mesh.servers[0].stop()
        assert time.monotonic() - started < 3
        for watcher in watchers:
            await watcher.task
            assert watcher.error is not None
            assert watcher.error.code() == grpc.StatusCode.UNAVAILABLE
            ended = failure(watcher.error)
            assert ended.metadata["situation"] == "shutting_down"
            assert "shutting down" in (watcher.error.details() or "")


class GatedHub:
    """Wraps a replica's hub so that its watch handlers take nothing from their subscriptions
    while `gate` is clear: a watcher whose stream is stalled, while the hub keeps delivering."""

    def __init__(self, hub: Any, gate: asyncio.Event) -> None:
        self.hub, self.gate = hub, gate

    @contextlib.asynccontextmanager
    async def subscribe(self, draft_id: str, after_event_id: str) -> AsyncIterator[Any]:
        async with self.hub.subscribe(draft_id, after_event_id) as subscription:
            yield GatedFeed(subscription, self.gate)


class GatedFeed:
    def __init__(self, subscription: Any, gate: asyncio.Event) -> None:
        self.subscription, self.gate = subscription, gate

    @property
    def end_reason(self) -> str | None:
        return self.subscription.end_reason  # type: ignore[no-any-return]

    def __aiter__(self) -> GatedFeed:
        return self

    async def __anext__(self) -> Any:
        await self.gate.wait()
        return await anext(self.subscription)


async def test_a_stalled_watcher_overflows_and_resyncs_from_a_snapshot(
    redis_url: str, model: Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = asyncio.Event()
    watch = DraftRuntime.watch

    def gated(runtime: DraftRuntime) -> Any:
        stream = watch(runtime)
        stream._hub = GatedHub(runtime.hub, gate)
        return stream

    monkeypatch.setattr(DraftRuntime, "watch", gated)
    async with replicas(
        redis_url, model.keys, model.address, count=1, draft_watch_queue_size=8
    ) as mesh:
        alice = mesh.user("alice", ALICE_ACCOUNT)
        draft = (await create(mesh, seat=pb.CREATOR_SEAT_BOTH)).draft
        watcher = Watcher(mesh.stubs[0], pb.WatchDraftRequest(draft_id=draft.draft_id), alice)
        await watcher.until(lambda m: m.HasField("snapshot"))
        for _ in range(12):  # well past the queue of 8 (suggestions come too)
            expected = draft.next_action
            draft = (
                await mesh.stubs[0].SubmitAction(
                    pb.SubmitActionRequest(
                        draft_id=draft.draft_id,
                        action=action(expected.kind, expected.side, free_hero(draft)),
                    ),
                    metadata=alice,
                )
            ).draft
        await asyncio.sleep(0.3)
        gate.set()
        await watcher.until(lambda m: m.HasField("snapshot") and m.sequence >= 9)
        expected = draft.next_action
        await mesh.stubs[0].SubmitAction(
            pb.SubmitActionRequest(
                draft_id=draft.draft_id,
                action=action(expected.kind, expected.side, free_hero(draft)),
            ),
            metadata=alice,
        )
        await watcher.until(lambda m: m.HasField("action_applied") and m.sequence == 13)
        snapshots = [m for m in watcher.messages if m.HasField("snapshot")]
        assert len(snapshots) == 2
        # After the fresh snapshot the stream goes on without a gap or a repeat.
        after = watcher.messages[watcher.messages.index(snapshots[1]) :]
        steps = [m.sequence for m in after if m.HasField("action_applied")]
        assert steps == list(range(snapshots[1].snapshot.sequence + 1, 14))
        watcher.call.cancel()


# -- suggestions: once per change, never per watcher --------------------------------------------


class CountingModel(model_grpc.ModelServiceServicer):
    """A ModelService that counts calls per draft position (the heroes acted so far)."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, tuple[int, ...]]] = Counter()
        self.started: dict[tuple[str, tuple[int, ...]], float] = {}

    def _count(self, method: str, request: Any) -> None:
        key = (method, tuple(a.hero_id for a in request.draft.actions))
        self.calls[key] += 1
        self.started.setdefault(key, time.monotonic())

    async def SuggestPicks(self, request: Any, context: Any) -> Any:
        self._count("picks", request)
        return model_pb.SuggestPicksResponse(model_version="counting")

    async def SuggestBans(self, request: Any, context: Any) -> Any:
        self._count("bans", request)
        return model_pb.SuggestBansResponse()

    async def PredictWin(self, request: Any, context: Any) -> Any:
        self._count("win", request)
        return model_pb.PredictWinResponse(radiant_win_probability=0.5, model_version="counting")


class SlowUsers(user_grpc.UserServiceServicer):
    """A UserService whose GetPreferences takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.answered: list[float] = []

    async def GetPreferences(self, request: Any, context: Any) -> Any:
        await asyncio.sleep(self.delay)
        self.answered.append(time.monotonic())
        return user_pb.GetPreferencesResponse(preferences=user_pb.Preferences())


@contextlib.asynccontextmanager
async def fake_peers(
    users_delay: float,
) -> AsyncIterator[tuple[CountingModel, SlowUsers, str, str]]:
    # Fakes of only the RPCs the draft service calls (the others stay abstract, unimplemented).
    model = CountingModel()  # type: ignore[abstract]
    users = SlowUsers(users_delay)  # type: ignore[abstract]
    server = grpc.aio.server()
    model_grpc.add_ModelServiceServicer_to_server(model, server)
    user_grpc.add_UserServiceServicer_to_server(users, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield model, users, f"127.0.0.1:{port}", f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_suggestions_are_asked_once_per_change_whatever_the_watchers(
    redis_url: str, model: Model
) -> None:
    # Two drafts, three watchers each over two replicas, actions through both replicas: the
    # model is asked exactly once per draft and sequence, and the captain's preferences are
    # asked alongside the model calls, not before them.
    async with (
        fake_peers(users_delay=0.3) as (counting, users, model_addr, user_addr),
        replicas(redis_url, model.keys, model_addr, user_addr=user_addr) as mesh,
    ):
        alice = mesh.user("alice", ALICE_ACCOUNT)
        drafts = [
            (
                await create(
                    # A bracket of its own: CreateDraft does not ask UserService for one.
                    mesh,
                    seat=pb.CREATOR_SEAT_BOTH,
                    account_id=ALICE_ACCOUNT,
                    bracket=c.SKILL_BRACKET_ALL,
                )
            ).draft
            for _ in range(2)
        ]
        watchers = [
            Watcher(mesh.stubs[n % 2], pb.WatchDraftRequest(draft_id=draft.draft_id), alice)
            for draft in drafts
            for n in range(3)
        ]
        for turn in range(4):
            for index, draft in enumerate(drafts):
                expected = draft.next_action
                drafts[index] = (
                    await mesh.stubs[(turn + index) % 2].SubmitAction(
                        pb.SubmitActionRequest(
                            draft_id=draft.draft_id,
                            action=action(expected.kind, expected.side, free_hero(draft, index)),
                        ),
                        metadata=alice,
                    )
                ).draft
            for watcher in watchers:
                await watcher.until(
                    lambda m, t=turn: m.HasField("suggestions_updated") and m.sequence == t + 1
                )
        await asyncio.sleep(0.3)  # nothing more comes
        # Once per draft and sequence after each action (the watchers waited for each). The
        # creation's own request may be dropped when the first action comes before the model
        # answers it (a newer change asks afresh), and the empty draft is both drafts' position.
        positions = {
            tuple(a.hero_id for a in draft.state.actions[:n])
            for draft in drafts
            for n in (1, 2, 3, 4)
        }
        assert len(positions) == 8
        for method in ("picks", "bans", "win"):
            assert {key: counting.calls[(method, key)] for key in positions} == dict.fromkeys(
                positions, 1
            )
            assert 1 <= counting.calls[(method, ())] <= 2
        assert set(counting.calls) == {
            (method, key) for method in ("picks", "bans", "win") for key in {*positions, ()}
        }
        # UserService (0.3 s) did not hold the model calls up.
        first_preferences = min(users.answered)
        assert counting.started[("bans", ())] < first_preferences - 0.2
        for watcher in watchers:
            watcher.call.cancel()


# -- personalisation ---------------------------------------------------------------------------


async def test_a_captains_pick_suggestions_come_from_their_hero_pool(
    postgres_dsn: str, redis_url: str, tmp_path: Path, model_redis: RedisProcess, model: Model
) -> None:
    async with user_service(postgres_dsn, redis_url, tmp_path) as users:
        keys = SigningKeys(users.ring)
        profile, own = await users.new_user("Captain")
        pool = HEROES[10:16]
        await users.stub.UpdatePreferences(
            user_pb.UpdatePreferencesRequest(
                user_id=profile.user_id,
                preferences=user_pb.Preferences(
                    hero_pool_hero_ids=pool,
                    preferred_positions=[c.POSITION_MID],
                    default_skill_bracket=c.SKILL_BRACKET_LEGEND_ANCIENT,
                ),
                update_mask=field_mask_pb2.FieldMask(
                    paths=["hero_pool_hero_ids", "preferred_positions", "default_skill_bracket"]
                ),
            ),
            metadata=own,
        )
        # A model replica on the same snapshot that trusts this test's signing keys.
        own_model = Model(
            model.settings.model_copy(update={"port": free_port(), "model_warehouse_dsn": None}),
            keys,
        )
        await own_model.start()
        try:
            # The harness hides its server's port; its channel's target is that address.
            user_addr = users.channel._channel.target.decode()  # type: ignore[attr-defined]
            async with replicas(
                redis_url, keys, own_model.address, count=1, user_addr=user_addr
            ) as mesh:
                captain = mesh.user(profile.user_id, profile.account_id)
                created = await mesh.stubs[0].CreateDraft(
                    pb.CreateDraftRequest(
                        mode=c.DRAFT_MODE_CAPTAINS_MODE,
                        patch=PATCH,
                        first_pick_side=RADIANT,
                        our_side=RADIANT,
                        account_id=profile.account_id,
                    ),
                    metadata=captain,
                )
                assert created.draft.bracket == c.SKILL_BRACKET_LEGEND_ANCIENT
                assert created.draft.radiant_captain.account_id == profile.account_id
                watcher = Watcher(
                    mesh.stubs[0],
                    pb.WatchDraftRequest(draft_id=created.draft.draft_id),
                    captain,
                )
                await watcher.until(lambda m: m.HasField("suggestions_updated"))
                update = next(
                    m for m in watcher.messages if m.HasField("suggestions_updated")
                ).suggestions_updated
                assert update.picks
                assert {s.hero_id for s in update.picks} <= set(pool)
                assert {s.hero_id for s in update.bans} - set(pool)  # bans are not limited
                watcher.call.cancel()
        finally:
            await own_model.stop()
