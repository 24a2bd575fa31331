"""The real OpenDota and Steam clients against recorded responses replayed locally."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.external.http import JsonApi, TokenBucket, retry_after_seconds
from services.common.external.opendota import OpenDotaClient
from services.common.external.steam import SteamClient
from tests.http_replay import Fault, ReplayServer, replay

SEQUENCE = "/IDOTA2Match_570/GetMatchHistoryBySequenceNum/v1"
ROUTES = {
    "/api/publicMatches": Path("api-samples/odota-web/publicMatches_mmr_descending-1.json"),
    "/api/matches/2472899185": Path("api-samples/odota-web/matches_2472899185.json"),
    "/api/matches/1781962623": Path("api-samples/odota-core/1781962623_output.json"),
    SEQUENCE: Path("api-samples/dota2api-steam/get_match_history_by_sequence_num_result.json"),
}


class FakeTime:
    """A clock the client sleeps on without really waiting."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def server(data_dir: Path) -> Iterator[ReplayServer]:
    yield from replay(data_dir, ROUTES)


def opendota(
    server: ReplayServer, fake: FakeTime, *, timeout: float = 2.0, api_key: str | None = None
) -> OpenDotaClient:
    api = JsonApi(
        server.base_url + "/api",
        bucket=TokenBucket(1000, 1000, clock=fake.clock, sleep=fake.sleep),
        timeout_seconds=timeout,
        attempts=3,
        clock=fake.clock,
        sleep=fake.sleep,
        secret_params={"api_key": api_key} if api_key else None,
    )
    return OpenDotaClient(api=api)


async def test_public_matches_page_parses_and_pages_by_match_id(server: ReplayServer) -> None:
    client = opendota(server, FakeTime())
    page = await client.public_matches(less_than_match_id=4_000_000_000)
    await client.close()
    assert page.data is not None
    assert len(page.data) == 100
    assert {"match_id", "radiant_team", "dire_team", "radiant_win"} <= page.data[0].keys()
    assert server.requests_to("/api/publicMatches")[0].query == {
        "less_than_match_id": ["4000000000"]
    }


async def test_match_details_and_api_key_sent_as_query_parameter(server: ReplayServer) -> None:
    client = opendota(server, FakeTime(), api_key="k-123")
    match = await client.match(2472899185)
    await client.close()
    assert match.data is not None
    assert match.data["match_id"] == 2472899185
    assert server.requests_to("/api/matches/2472899185")[0].query["api_key"] == ["k-123"]


async def test_unknown_match_is_a_final_not_found(server: ReplayServer) -> None:
    client = opendota(server, FakeTime())
    result = await client.match(1)
    await client.close()
    assert (result.data, result.status, result.retryable) == (None, 404, False)
    assert len(server.requests_to("/api/matches/1")) == 1


async def test_429_waits_for_retry_after_then_succeeds(server: ReplayServer) -> None:
    fake = FakeTime()
    server.queue("/api/publicMatches", Fault(status=429, headers={"Retry-After": "7"}, body=b"{}"))
    client = opendota(server, fake)
    page = await client.public_matches()
    await client.close()
    assert page.data is not None
    assert client.rate_limited_responses == 1
    assert client.requests_made == 2
    assert any(abs(s - 7) < 0.01 for s in fake.slept), fake.slept


async def test_5xx_is_retried_with_backoff(server: ReplayServer) -> None:
    fake = FakeTime()
    server.queue(
        "/api/publicMatches",
        Fault(status=502, body=b"bad gateway"),
        Fault(status=503, body=b"busy"),
    )
    client = opendota(server, fake)
    page = await client.public_matches()
    await client.close()
    assert page.data is not None
    assert client.requests_made == 3


async def test_persistent_5xx_is_a_retryable_error_value(server: ReplayServer) -> None:
    server.queue("/api/publicMatches", *[Fault(status=500, body=b"oops")] * 3)
    client = opendota(server, FakeTime())
    page = await client.public_matches()
    await client.close()
    assert page.data is None
    assert page.retryable
    assert "HTTP 500" in (page.error or "")
    assert client.stats.last_error == page.error


async def test_timeout_is_a_retryable_error_value(server: ReplayServer) -> None:
    server.queue("/api/publicMatches", *[Fault(delay_seconds=0.6)] * 3)
    client = opendota(server, FakeTime(), timeout=0.2)
    page = await client.public_matches()
    await client.close()
    assert page.data is None
    assert page.retryable
    assert "timed out" in (page.error or "")


async def test_truncated_json_is_an_error_value(server: ReplayServer) -> None:
    server.queue("/api/matches/2472899185", *[Fault(truncate_to=500)] * 3)
    client = opendota(server, FakeTime())
    match = await client.match(2472899185)
    await client.close()
    assert match.data is None
    assert "invalid JSON" in (match.error or "")


async def test_exhausted_minute_quota_pauses_until_the_next_minute(server: ReplayServer) -> None:
    fake = FakeTime()
    server.queue("/api/publicMatches", Fault(headers={"X-Rate-Limit-Remaining-Minute": "0"}))
    client = opendota(server, fake)
    assert (await client.public_matches()).data is not None
    before = fake.now
    assert (await client.public_matches()).data is not None
    await client.close()
    assert fake.now - before >= 60 - before % 60 - 0.01


async def test_token_bucket_spaces_requests() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=0.2, burst=1, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    for _ in range(3):
        await bucket.acquire()
    assert fake.now - start == pytest.approx(10.0)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("12", now=0) == 12
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert retry_after_seconds("soon", now=0) is None


async def test_steam_sequence_page_and_the_key_never_in_errors(server: ReplayServer) -> None:
    fake = FakeTime()
    api = JsonApi(
        server.base_url,
        bucket=TokenBucket(1000, 1000, clock=fake.clock, sleep=fake.sleep),
        attempts=2,
        clock=fake.clock,
        sleep=fake.sleep,
        secret_params={"key": "SECRET"},
    )
    client = SteamClient(api_key="SECRET", api=api)
    page = await client.match_history_by_seq_num(240, 100)
    assert page.data is not None
    assert len(page.data) == 100
    assert server.requests_to(SEQUENCE)[0].query["start_at_match_seq_num"] == ["240"]
    assert server.requests_to(SEQUENCE)[0].query["key"] == ["SECRET"]
    server.queue(SEQUENCE, *[Fault(status=500, body=b"")] * 2)
    failed = await client.match_history_by_seq_num(340, 100)
    await client.close()
    assert failed.data is None
    assert "SECRET" not in (failed.error or "")


async def test_daily_budget_spreads_requests_over_the_day() -> None:
    fake = FakeTime()
    daily = TokenBucket(rate=3000 / 86_400, burst=2, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    for _ in range(3):
        await daily.acquire()
    # Two from the burst, then one more token takes 86,400 / 3,000 = 28.8 s.
    assert fake.now - start == pytest.approx(28.8)
