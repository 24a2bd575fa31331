"""Two deployments on one Redis database (DEPLOYMENT differs) never read or overwrite each
other's keys: model snapshots and runs, drafts, ingest cursors, login states, the deny list and
rate-limit counts; and `counterpick up` gives each state dir a deployment of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.auth.config import AuthSettings
from services.auth.repo import DenyListWriter, LoginStateStore, utc_now
from services.cli.mesh_state import deployment_for
from services.common.config import DEFAULT_DEPLOYMENT, DeploymentSettings
from services.common.tokens import DenyList
from services.draft.config import DraftSettings
from services.draft.repo import DraftStore
from services.ingest.repo import CursorStore
from services.model.repo import SnapshotStore
from services.model.snapshot import RunRecord
from tests.contract.test_draft_store import doc, in_
from tests.contract.test_snapshot_store import patch_model, snapshot

A, B = "deploy-a", "deploy-b"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_snapshots_and_runs_of_one_deployment_are_invisible_to_another(
    redis: aioredis.Redis,
) -> None:
    a, b = SnapshotStore(redis, A), SnapshotStore(redis, B)
    version = await a.next_version()
    await a.publish(snapshot(version, patch_model("7.41", seed=1)))
    await a.record_run(
        RunRecord(
            run_id="run-a",
            started_at=1.0,
            finished_at=2.0,
            status="succeeded",
            mode="full",
            matches_used=10,
            coverage={},
        )
    )
    assert await a.current_version() == version
    loaded = await a.load(version)
    assert loaded is not None
    assert await b.current_version() is None
    assert await b.load(version) is None
    assert await b.runs() == []
    # B publishing its own first version does not move A's pointer.
    other = await b.next_version()
    await b.publish(snapshot(other, patch_model("7.40", seed=2)))
    assert await a.current_version() == version
    loaded_b = await b.load(other)
    assert loaded_b is not None
    assert loaded_b.current_patch == "7.40"
    assert [run.run_id for run in await a.runs()] == ["run-a"]
    # Every key either wrote starts with its deployment: nothing is shared, nothing unprefixed.
    keys = [key.decode() async for key in redis.scan_iter("*")]
    assert keys
    assert all(key.startswith((f"{A}:", f"{B}:")) for key in keys), keys


async def test_drafts_of_one_deployment_are_invisible_to_another(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYMENT", A)
    prefix_a = DraftSettings().draft_key_prefix
    monkeypatch.setenv("DEPLOYMENT", B)
    prefix_b = DraftSettings().draft_key_prefix
    assert (prefix_a, prefix_b) == (f"{A}:draft", f"{B}:draft")
    a, b = DraftStore(redis, prefix=prefix_a), DraftStore(redis, prefix=prefix_b)
    await a.create("same-id", doc(0), expires_at=in_(600), deadline=in_(30))
    assert await a.load("same-id") is not None
    assert await b.load("same-id") is None
    # The same id in B is a new draft, not a clash with A's.
    await b.create("same-id", doc(3), expires_at=in_(600), deadline=None)
    loaded_a, loaded_b = await a.load("same-id"), await b.load("same-id")
    assert loaded_a is not None
    assert loaded_b is not None
    assert loaded_a.document != loaded_b.document


async def test_cursors_logins_deny_lists_and_rate_limits_are_per_deployment(
    redis: aioredis.Redis, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await CursorStore(redis, A).advance("opendota_public", 42)
    assert await CursorStore(redis, B).get("opendota_public") is None
    ttl = timedelta(minutes=5)
    await LoginStateStore(redis, ttl, ttl, A).remember("state-1", "/back", utc_now())
    assert await LoginStateStore(redis, ttl, ttl, B).take("state-1") is None
    assert await LoginStateStore(redis, ttl, ttl, A).take("state-1") == "/back"
    await DenyListWriter(redis, A).deny("jti:abc", utc_now() + ttl)
    seen_by_a = DenyList(redis_url, deployment=A, refresh_seconds=0)
    seen_by_b = DenyList(redis_url, deployment=B, refresh_seconds=0)
    assert "jti:abc" in await seen_by_a._current()
    assert "jti:abc" not in await seen_by_b._current()
    monkeypatch.setenv("DEPLOYMENT", B)
    settings = AuthSettings.model_validate({"auth_generate_key": True})
    assert settings.deployment == B
    keys = {key.decode() async for key in redis.scan_iter("*")}
    assert all(key.startswith(f"{A}:") for key in keys), keys


def test_up_gives_each_state_dir_a_deployment_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYMENT", raising=False)
    one, two = deployment_for(tmp_path / "one"), deployment_for(tmp_path / "two")
    assert one != two
    assert one == deployment_for(tmp_path / "one" / ".." / "one")  # the resolved path counts
    for name in (one, two):
        assert DeploymentSettings.model_validate({"deployment": name}).deployment == name
    monkeypatch.setenv("DEPLOYMENT", "shared")
    assert deployment_for(tmp_path / "one") == "shared"
    assert DeploymentSettings().deployment != DEFAULT_DEPLOYMENT
