"""Two draft service processes on one Redis: a draft played across both, a watcher cut on one and
resumed on the other, and a timeout that both processes' sweepers see, applied once.

The processes verify tokens against a JWKS served here (the auth service's GetJwks, with the
test's signing keys); ModelService is absent, which drafts must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from counterpick.auth.v1 import auth_service_pb2 as auth_pb
from counterpick.auth.v1 import auth_service_pb2_grpc as auth_grpc
from counterpick.common.v1 import common_pb2 as c
from counterpick.draft.v1 import draft_service_pb2 as pb
from counterpick.draft.v1 import draft_service_pb2_grpc as pb_grpc
from tests.auth_keys import SigningKeys
from tests.conftest import REPO_ROOT, free_port
from tests.contract.test_draft_service import Watcher, action, free_hero, log_entries
from tests.rpc import bearer

pytestmark = pytest.mark.e2e


class Jwks(auth_grpc.AuthServiceServicer):
    """Only GetJwks, with the test's keys; the rest of AuthService is not needed here."""

    def __init__(self, keys: SigningKeys) -> None:
        self._keys = keys

    async def GetJwks(
        self, request: auth_pb.GetJwksRequest, context: Any
    ) -> auth_pb.GetJwksResponse:
        return auth_pb.GetJwksResponse(jwks_json=json.dumps(self._keys.ring.jwks()))


@pytest.fixture
async def jwks(tmp_path: Path) -> AsyncIterator[tuple[SigningKeys, int]]:
    keys = SigningKeys.create(tmp_path / "keys")
    server = grpc.aio.server()
    # Only GetJwks is overridden: the rest answers UNIMPLEMENTED, which is all this test needs.
    auth_grpc.add_AuthServiceServicer_to_server(Jwks(keys), server)  # type: ignore[abstract]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield keys, port
    await server.stop(0)


@pytest.fixture
def processes(redis_url: str, jwks: tuple[SigningKeys, int], tmp_path: Path) -> Iterator[list[int]]:
    _, auth_port = jwks
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "AUTH_ADDR": f"127.0.0.1:{auth_port}",
        "MODEL_ADDR": f"127.0.0.1:{free_port()}",
        "USER_ADDR": f"127.0.0.1:{free_port()}",
        "DRAFT_KEY_PREFIX": f"e2e:{tmp_path.name}",
        "DRAFT_SWEEP_INTERVAL_SECONDS": "0.05",
        "OTEL_TRACES_EXPORTER": "none",
    }
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "services.draft"],
            cwd=REPO_ROOT,
            env={**env, "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"draft-{port}.log").open("w"),
        )
        for port in ports
    ]
    try:
        yield ports
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(20)


async def ready(stub: pb_grpc.DraftServiceAsyncStub, metadata: Any) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                await stub.GetDraft(pb.GetDraftRequest(draft_id="probe"), metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    return
            await asyncio.sleep(0.2)


async def test_two_processes_share_drafts_watchers_and_timeouts(
    processes: list[int], jwks: tuple[SigningKeys, int], redis_url: str
) -> None:
    keys, _ = jwks
    alice = bearer(keys.token("user", account_id=1001, user_id="alice"))
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in processes]
    stubs = [pb_grpc.DraftServiceStub(channel) for channel in channels]
    try:
        for stub in stubs:
            await ready(stub, alice)
        created = await stubs[0].CreateDraft(
            pb.CreateDraftRequest(
                mode=c.DRAFT_MODE_CAPTAINS_MODE,
                patch="7.41",
                first_pick_side=c.TEAM_SIDE_RADIANT,
                timers=pb.DraftTimers(step_time=Duration(seconds=1), reserve_time=Duration()),
            ),
            metadata=alice,
        )
        draft = created.draft
        draft_id = draft.draft_id
        request = pb.WatchDraftRequest(draft_id=draft_id)
        full = Watcher(stubs[1], request, alice)
        cut = Watcher(stubs[0], request, alice)
        await cut.until(lambda m: m.HasField("snapshot"))
        for step in range(4):
            expected = draft.next_action
            draft = (
                await stubs[step % 2].SubmitAction(
                    pb.SubmitActionRequest(
                        draft_id=draft_id,
                        action=action(expected.kind, expected.side, free_hero(draft)),
                    ),
                    metadata=alice,
                )
            ).draft
        await cut.until(lambda m: m.sequence == 4)
        cut.call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cut.task
        seen = max(s for s, _ in cut.steps())
        # The fifth step (a ban) is left to the clock: both sweepers see it due, one applies it.
        await full.until(lambda m: m.HasField("ban_skipped"), within=10)
        current = (
            await stubs[0].GetDraft(pb.GetDraftRequest(draft_id=draft_id), metadata=alice)
        ).draft
        draft = (
            await stubs[1].SubmitAction(
                pb.SubmitActionRequest(
                    draft_id=draft_id,
                    action=action(
                        current.next_action.kind, current.next_action.side, free_hero(current)
                    ),
                    expected_sequence=current.sequence,
                ),
                metadata=alice,
            )
        ).draft
        resumed = Watcher(
            stubs[1], pb.WatchDraftRequest(draft_id=draft_id, resume_after_sequence=seen), alice
        )
        await resumed.until(lambda m: m.sequence == draft.sequence)
        await full.until(lambda m: m.sequence == draft.sequence)
        last = draft.sequence  # later steps may time out meanwhile; compare up to here

        def upto(steps: list[tuple[int, str]]) -> list[tuple[int, str]]:
            return [step for step in steps if step[0] <= last]

        assert upto(cut.steps() + resumed.steps()) == upto(full.steps())
        assert [s for s, _ in upto(full.steps())] == list(range(1, last + 1))
        assert upto(full.steps())[4] == (5, "ban_skipped")
        entries = await log_entries(redis_url, draft_id)
        steps = [e["sequence"] for e in entries if e["type"] in ("action_applied", "ban_skipped")]
        assert steps == list(range(1, len(steps) + 1))  # every step logged once, the skip too
        for watcher in (full, resumed):
            watcher.call.cancel()
    finally:
        for channel in channels:
            await channel.close()
