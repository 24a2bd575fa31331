"""The real OpenDota and Steam clients against recorded responses replayed on loopback.

Every client here points at `tests.replay_server` (nothing reaches the internet) and waits on an
injected clock, so Retry-After pauses, minute quotas and token-bucket spacing take no real time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.external.json_api import JsonApi
from services.common.external.opendota import OpenDotaClient
from services.common.external.rate_limits import TokenBucket, retry_after_seconds
from services.common.external.results import FailureReason, Fetched, Reachability
from services.common.external.steam import SteamClient
from tests.replay_server import (
    SEQUENCE_PATH,
    Fault,
    PublicMatchesFeed,
    ReplayServer,
    has_api_samples,
    recorded_public_matches,
)

STEAM_KEY = "F00DFACEC0FFEE0123456789ABCDEF01"
PUBLIC = "/api/publicMatches"
PARSED = "/api/parsedMatches"
# Every column a publicMatches row carries (the recorded response in api-samples).
PUBLIC_MATCH_COLUMNS = {
    "match_id",
    "match_seq_num",
    "radiant_win",
    "start_time",
    "duration",
    "lobby_type",
    "game_mode",
    "avg_rank_tier",
    "num_rank_tier",
    "cluster",
    "radiant_team",
    "dire_team",
}


class FakeTime:
    """A wall clock (unix seconds) the clients read and sleep on; sleeping only moves it."""

    def __init__(self, start: float = 1_800_000_012.5) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


class StampingTransport(httpx.AsyncHTTPTransport):
    """Records the fake time at which each request actually leaves the client."""

    def __init__(self, fake: FakeTime) -> None:
        super().__init__()
        self.fake = fake
        self.sent_at: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent_at.append(self.fake.now)
        return await super().handle_async_request(request)


@pytest.fixture
def replay(data_dir: Path) -> Iterator[ReplayServer]:
    if not has_api_samples(data_dir):
        pytest.skip(f"recorded API responses not found under {data_dir / 'api-samples'}")
    with ReplayServer(data_dir, steam_key=STEAM_KEY) as server:
        yield server


def opendota(replay: ReplayServer, fake: FakeTime, **options: Any) -> OpenDotaClient:
    """The production client with its default limits, on the fake clock."""
    return OpenDotaClient(replay.opendota_url, clock=fake.clock, sleep=fake.sleep, **options)


def steam(replay: ReplayServer, fake: FakeTime, **options: Any) -> SteamClient:
    return SteamClient(STEAM_KEY, replay.base_url, clock=fake.clock, sleep=fake.sleep, **options)


def tunable(
    replay: ReplayServer, fake: FakeTime, *, caps: list[float] | None = None, **options: Any
) -> OpenDotaClient:
    """An OpenDota client with a roomy bucket and a recording, deterministic jitter."""

    def jitter(cap: float) -> float:
        if caps is not None:
            caps.append(cap)
        return cap

    api = JsonApi(
        replay.opendota_url,
        bucket=TokenBucket(1000, 1000, clock=fake.clock, sleep=fake.sleep),
        clock=fake.clock,
        sleep=fake.sleep,
        jitter=jitter,
        **options,
    )
    return OpenDotaClient(api=api)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def next_utc_midnight(now: float) -> float:
    return (now // 86_400 + 1) * 86_400


# -- real recorded responses ------------------------------------------------------------------


async def test_public_matches_page_parses_untransformed(replay: ReplayServer) -> None:
    fake = FakeTime()
    async with opendota(replay, fake) as client:
        page = await client.public_matches()
    assert page.ok
    assert page.data is not None
    assert len(page.data) == 100
    assert all(row.keys() >= PUBLIC_MATCH_COLUMNS for row in page.data)
    # The 2018 recording has comma-separated hero lists; the client passes them through.
    assert page.data[0]["radiant_team"] == "91,72,86,33,111"
    assert page.status == 200
    (request,) = replay.requests_to(PUBLIC)
    assert request.query == {}  # no cursor on the first page, no key configured
    assert fake.sleeps == []  # the default limits allow a first request at once


async def test_public_matches_pages_by_match_id_and_sends_the_key(replay: ReplayServer) -> None:
    async with opendota(replay, FakeTime(), api_key="k-123") as client:
        first = await client.public_matches()
        assert first.data is not None
        oldest = min(row["match_id"] for row in first.data)
        await client.public_matches(less_than_match_id=oldest)
        match = await client.match(2472899185)
    first_request, second_request = replay.requests_to(PUBLIC)
    assert first_request.query == {"api_key": ["k-123"]}
    assert second_request.query == {"less_than_match_id": [str(oldest)], "api_key": ["k-123"]}
    # Every endpoint carries the key as a query parameter, match details included.
    assert match.data is not None
    assert match.data["match_id"] == 2472899185
    assert replay.requests_to("/api/matches/2472899185")[0].query == {"api_key": ["k-123"]}


async def test_a_live_public_matches_feed_pages_like_opendota(data_dir: Path) -> None:
    """The generated history the ingest crash test polls, read through the real client:
    `match_id < less_than_match_id`, newest first, 100 a page; without a bound (or with one
    that JavaScript's Number() makes 0 or NaN) the bound is the newest finished match, which
    is therefore not listed."""
    recorded = recorded_public_matches(data_dir)
    feed = PublicMatchesFeed(recorded, total=251, initial=251, clock=lambda: 0.0)
    with ReplayServer(data_dir, public_matches=feed) as server:
        async with tunable(server, FakeTime()) as client:
            pages: list[list[int]] = []
            less_than: int | None = None
            while True:
                page = await client.public_matches(less_than_match_id=less_than)
                assert page.data is not None
                if not page.data:
                    break
                pages.append([row["match_id"] for row in page.data])
                less_than = pages[-1][-1]
            at_an_id = await client.public_matches(less_than_match_id=feed.ids[100])
        sent = [request.param("less_than_match_id") for request in server.requests_to(PUBLIC)]
    assert [len(ids) for ids in pages] == [100, 100, 50]
    assert [i for ids in pages for i in ids] == feed.listed_ids()[::-1] == feed.ids[-2::-1]
    assert sent[:4] == [None, *(str(ids[-1]) for ids in pages)]
    assert at_an_id.data is not None
    assert [row["match_id"] for row in at_an_id.data] == feed.ids[99::-1]  # bound excluded
    for bound in ("abc", "0", "", "1_000"):
        status, body = feed.answer({"less_than_match_id": [bound]})
        assert status == 200
        assert [row["match_id"] for row in json.loads(body)] == pages[0]
    # Resampled: fresh ids and sequence numbers, every other column as recorded.
    rows = json.loads(feed.answer({})[1])
    assert len({row["match_seq_num"] for row in rows}) == 100
    drafts = {(row["radiant_team"], row["dire_team"]) for row in recorded}
    assert all((row["radiant_team"], row["dire_team"]) in drafts for row in rows)


def test_a_live_feed_keeps_finishing_matches_from_its_first_request(data_dir: Path) -> None:
    now = 0.0
    feed = PublicMatchesFeed(
        recorded_public_matches(data_dir),
        total=1000,
        initial=100,
        per_second=50,
        clock=lambda: now,
    )
    now = 7.0
    assert feed.finished_count() == 100  # nothing finishes before anyone asks
    assert len(feed.listed_ids()) == 99
    feed.answer({})
    now = 10.0
    assert feed.finished_count() == 250
    rows = json.loads(feed.answer({})[1])
    assert [row["match_id"] for row in rows] == feed.ids[248:148:-1]
    now = 100.0
    assert feed.all_finished
    assert feed.listed_ids() == feed.ids[:-1]


def test_a_held_page_back_waits_for_release(data_dir: Path) -> None:
    feed = PublicMatchesFeed(recorded_public_matches(data_dir), total=300, initial=300)
    feed.hold_next_page_back()
    feed.answer({})  # the newest page is never held
    assert not feed.held.is_set()
    answered = threading.Event()

    def page_back() -> None:
        feed.answer({"less_than_match_id": [str(feed.ids[200])]})
        answered.set()

    worker = threading.Thread(target=page_back)
    worker.start()
    assert feed.held.wait(5)
    assert not answered.wait(0.2)
    feed.release()
    worker.join(5)
    assert answered.is_set()
    feed.held.clear()
    feed.answer({"less_than_match_id": [str(feed.ids[200])]})
    assert not feed.held.is_set()  # one hold per hold_next_page_back()


async def test_parsed_matches_rows_and_paging(replay: ReplayServer) -> None:
    async with opendota(replay, FakeTime()) as client:
        page = await client.parsed_matches(less_than_match_id=4_106_526_503)
    assert page.data is not None
    assert len(page.data) == 100
    assert all(row.keys() == {"match_id"} for row in page.data)
    assert replay.requests_to(PARSED)[0].param("less_than_match_id") == "4106526503"


@pytest.mark.parametrize("match_id", [1781962623, 3254426673, 4080856812, 2472899185])
async def test_match_details_from_the_recordings(replay: ReplayServer, match_id: int) -> None:
    async with opendota(replay, FakeTime()) as client:
        match = await client.match(match_id)
    assert match.data is not None
    assert match.data["match_id"] == match_id
    assert len(match.data["players"]) == 10


async def test_unknown_match_is_a_final_not_found(replay: ReplayServer) -> None:
    async with opendota(replay, FakeTime()) as client:
        result = await client.match(1)
        assert client.stats.state is Reachability.REACHABLE  # a 404 is a proper answer
    assert (result.data, result.status, result.retryable) == (None, 404, False)
    assert result.reason is FailureReason.NOT_FOUND
    assert result.not_found
    assert len(replay.requests_to("/api/matches/1")) == 1


async def test_steam_sequence_page_of_100_matches(replay: ReplayServer) -> None:
    async with steam(replay, FakeTime()) as client:
        page = await client.match_history_by_seq_num(240)
        clamped = await client.match_history_by_seq_num(300, matches_requested=500)
        recent = await client.match_history_by_seq_num(7_215_564_751)
    assert page.data is not None
    assert len(page.data) == 100
    sequence = [m["match_seq_num"] for m in page.data]
    assert sequence[0] == 240
    assert sequence == sorted(sequence)
    assert all(len(m["players"]) > 0 for m in page.data)
    first, second, _ = replay.requests_to(SEQUENCE_PATH)
    assert first.query == {
        "start_at_match_seq_num": ["240"],
        "matches_requested": ["100"],
        "key": [STEAM_KEY],
    }
    assert second.param("matches_requested") == "100"  # Valve's maximum
    assert clamped.ok
    assert recent.data is not None
    assert [m["match_id"] for m in recent.data] == [8591933650]


async def test_steam_status_other_than_1_is_a_final_failure(replay: ReplayServer) -> None:
    body = b'{"result":{"status":2,"statusDetail":"Error retrieving match data."}}'
    replay.script(SEQUENCE_PATH, Fault(body=body))
    async with steam(replay, FakeTime()) as client:
        result = await client.match_history_by_seq_num(240)
        assert client.stats.last_success_at is None
        assert client.stats.state is Reachability.FAILING
    assert result.reason is FailureReason.UPSTREAM_ERROR
    assert not result.retryable
    assert "Error retrieving match data." in (result.error or "")
    assert len(replay.requests_to(SEQUENCE_PATH)) == 1


async def test_a_body_of_the_wrong_shape_is_an_invalid_body(replay: ReplayServer) -> None:
    replay.script(PUBLIC, Fault(body=b'{"rows": []}'))
    async with opendota(replay, FakeTime()) as client:
        result = await client.public_matches()
    assert result.reason is FailureReason.INVALID_BODY
    assert not result.retryable
    assert "expected a JSON array" in (result.error or "")


# -- rate limiting ----------------------------------------------------------------------------


async def test_429_waits_for_retry_after_then_succeeds(replay: ReplayServer) -> None:
    fake = FakeTime()
    replay.script(PUBLIC, Fault.rate_limited(7))
    started = time.monotonic()
    async with opendota(replay, fake) as client:
        page = await client.public_matches()
        assert client.rate_limited_responses == 1
        assert client.requests_made == 2
        assert client.stats.state is Reachability.REACHABLE
    assert page.data is not None
    assert 7 in fake.sleeps
    assert time.monotonic() - started < 5  # the 7 s passed on the fake clock only


async def test_429_retry_after_as_an_http_date(replay: ReplayServer) -> None:
    fake = FakeTime()
    # The date is measured against the response's Date header, not against our (fake) clock.
    replay.script(PUBLIC, Fault.rate_limited(formatdate(time.time() + 30, usegmt=True)))
    async with opendota(replay, fake) as client:
        page = await client.public_matches()
    assert page.ok
    assert any(28 <= pause <= 31 for pause in fake.sleeps), fake.sleeps


async def test_429_pauses_the_whole_client(replay: ReplayServer) -> None:
    fake = FakeTime()
    replay.script(PUBLIC, Fault.rate_limited(20))
    async with opendota(replay, fake, attempts=1) as client:
        limited = await client.public_matches()
        assert limited.reason is FailureReason.RATE_LIMITED
        assert limited.retryable
        assert limited.retry_at == pytest.approx(fake.now + 20)
        paused_at = fake.now
        other = await client.parsed_matches()  # another endpoint waits out the same pause
    assert other.ok
    assert fake.now >= paused_at + 20
    assert 20 in fake.sleeps


async def test_429_beyond_the_pause_cap_is_returned_not_waited(replay: ReplayServer) -> None:
    fake = FakeTime()
    replay.script(PUBLIC, Fault.rate_limited(3600))
    async with opendota(replay, fake) as client:
        first = await client.public_matches()
        second = await client.match(2472899185)
        assert client.requests_made == 1  # the second call never left the client
    assert first.reason is FailureReason.RATE_LIMITED
    assert first.retryable
    assert first.retry_at == pytest.approx(fake.now + 3600)
    assert second.reason is FailureReason.RATE_LIMITED
    assert second.retry_at == first.retry_at
    assert max(fake.sleeps, default=0) < 3600


async def test_429_with_an_exhausted_minute_waits_for_the_next_minute(
    replay: ReplayServer,
) -> None:
    fake = FakeTime()
    replay.script(PUBLIC, Fault.rate_limited(headers={"X-Rate-Limit-Remaining-Minute": "-1"}))
    boundary = fake.now - fake.now % 60 + 60
    async with opendota(replay, fake) as client:
        page = await client.public_matches()
    assert page.ok
    assert boundary <= fake.now <= boundary + 2


async def test_remaining_minute_zero_holds_the_next_request_until_the_next_minute(
    replay: ReplayServer,
) -> None:
    fake = FakeTime()
    transport = StampingTransport(fake)
    replay.script(PUBLIC, Fault.with_headers({"X-Rate-Limit-Remaining-Minute": "0"}))
    async with opendota(replay, fake, transport=transport) as client:
        assert (await client.public_matches()).ok  # the last request the minute allowed
        boundary = fake.now - fake.now % 60 + 60
        assert (await client.public_matches()).ok
    assert transport.sent_at[1] >= boundary
    assert client.rate_limited_responses == 0  # we never made the upstream say 429


async def test_remaining_day_zero_fails_fast_until_tomorrow(replay: ReplayServer) -> None:
    fake = FakeTime()
    replay.script(PUBLIC, Fault.with_headers({"X-Rate-Limit-Remaining-Day": "0"}))
    async with opendota(replay, fake) as client:
        last = await client.public_matches()
        refused = await client.public_matches()
        assert client.requests_made == 1  # refused without a request
        assert client.stats.paused_until == next_utc_midnight(fake.now)
        fake.now = next_utc_midnight(fake.now) + 1
        tomorrow = await client.public_matches()
    assert last.ok  # the response that spent the quota still carries its data
    assert refused.reason is FailureReason.QUOTA_EXHAUSTED
    assert not refused.retryable
    assert refused.retry_at == next_utc_midnight(fake.now - 2)
    assert "quota exhausted" in (refused.error or "")
    assert tomorrow.ok


async def test_429_for_the_daily_quota_is_not_retried(replay: ReplayServer) -> None:
    fake = FakeTime()
    replay.script(
        PUBLIC,
        Fault.rate_limited(
            headers={"X-Rate-Limit-Remaining-Day": "-1", "X-Rate-Limit-Remaining-Minute": "40"}
        ),
    )
    async with opendota(replay, fake) as client:
        result = await client.public_matches()
        assert client.requests_made == 1
        assert client.rate_limited_responses == 1
        assert client.stats.state is Reachability.RATE_LIMITED
    assert result.reason is FailureReason.QUOTA_EXHAUSTED
    assert (result.retryable, result.status) == (False, 429)
    assert result.retry_at == next_utc_midnight(fake.now)


# -- retries ----------------------------------------------------------------------------------


async def test_5xx_is_retried_with_exponential_full_jitter_backoff(replay: ReplayServer) -> None:
    fake = FakeTime()
    caps: list[float] = []
    replay.script(PUBLIC, Fault.server_error(502), Fault.server_error(503))
    async with tunable(replay, fake, caps=caps, backoff_seconds=0.5) as client:
        page = await client.public_matches()
        assert client.requests_made == 3
    assert page.ok
    assert caps == [0.5, 1.0]  # doubling caps; the delay is drawn uniformly below each
    assert fake.sleeps == [0.5, 1.0]


async def test_persistent_5xx_is_a_retryable_failure(replay: ReplayServer) -> None:
    fake = FakeTime()
    caps: list[float] = []
    replay.script(PUBLIC, Fault.server_error(500, times=10))
    async with tunable(
        replay, fake, caps=caps, attempts=4, backoff_seconds=1, max_backoff_seconds=3
    ) as client:
        page = await client.public_matches()
        stats = client.stats
        assert client.requests_made == 4
    assert page.data is None
    assert page.retryable
    assert page.reason is FailureReason.SERVER_ERROR
    assert page.status == 500
    assert "HTTP 500" in (page.error or "")
    assert caps == [1, 2, 3]  # capped at max_backoff_seconds
    assert stats.last_error == page.error
    assert stats.last_error_at == fake.now
    assert stats.state is Reachability.FAILING
    assert stats.reachable is True


async def test_timeout_is_a_retryable_failure(replay: ReplayServer) -> None:
    replay.script(PUBLIC, Fault.slow(3.0, times=2))
    async with tunable(replay, FakeTime(), timeout_seconds=0.2, attempts=2) as client:
        page = await client.public_matches()
        assert client.requests_made == 2
        assert client.stats.state is Reachability.UNREACHABLE
        assert client.reachable is False
    assert page.reason is FailureReason.TIMEOUT
    assert page.retryable
    assert page.status is None
    assert "timed out after 0.2s" in (page.error or "")


async def test_truncated_json_is_an_error_result(replay: ReplayServer) -> None:
    replay.script("/api/matches/*", Fault.truncated(500, times=3))
    async with tunable(replay, FakeTime(), attempts=3) as client:
        match = await client.match(2472899185)
        assert client.requests_made == 3  # a broken body is worth another try
    assert match.data is None
    assert match.reason is FailureReason.INVALID_BODY
    assert match.retryable
    assert "invalid JSON (500 bytes)" in (match.error or "")


async def test_truncated_json_then_success(replay: ReplayServer) -> None:
    replay.script("/api/matches/*", Fault.truncated(500))
    async with tunable(replay, FakeTime(), attempts=3) as client:
        match = await client.match(1781962623)
    assert match.data is not None
    assert match.data["match_id"] == 1781962623


async def test_body_cut_mid_stream_is_a_retryable_connection_failure(
    replay: ReplayServer,
) -> None:
    replay.script(PUBLIC, Fault.truncated(1000, cut_connection=True, times=2))
    async with tunable(replay, FakeTime(), attempts=2) as client:
        page = await client.public_matches()
    assert page.reason is FailureReason.CONNECTION
    assert page.retryable


async def test_connection_refused_is_a_retryable_failure() -> None:
    fake = FakeTime()
    async with OpenDotaClient(
        f"http://127.0.0.1:{closed_port()}/api", clock=fake.clock, sleep=fake.sleep, attempts=2
    ) as client:
        assert client.reachable is None  # nothing sent yet
        page = await client.public_matches()
        assert client.reachable is False
        assert client.requests_made == 2
    assert page.reason is FailureReason.CONNECTION
    assert page.retryable


# -- pacing -----------------------------------------------------------------------------------


async def test_token_bucket_spaces_requests() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=2, burst=3, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    granted = []
    for _ in range(5):
        await bucket.acquire()
        granted.append(fake.now - start)
    assert granted == pytest.approx([0, 0, 0, 0.5, 1.0])


async def test_token_bucket_serves_concurrent_waiters_in_turn() -> None:
    fake = FakeTime()
    bucket = TokenBucket(rate=0.2, burst=1, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    granted: list[float] = []

    async def take() -> None:
        await bucket.acquire()
        granted.append(fake.now - start)

    await asyncio.gather(*(take() for _ in range(3)))
    assert sorted(granted) == pytest.approx([0, 5, 10])


async def test_daily_budget_spreads_requests_over_the_day() -> None:
    fake = FakeTime()
    daily = TokenBucket(rate=3000 / 86_400, burst=2, clock=fake.clock, sleep=fake.sleep)
    start = fake.now
    for _ in range(3):
        await daily.acquire()
    # Two from the burst, then one more token takes 86,400 / 3,000 = 28.8 s.
    assert fake.now - start == pytest.approx(28.8)


async def test_steam_sends_one_request_per_five_seconds(replay: ReplayServer) -> None:
    fake = FakeTime()
    transport = StampingTransport(fake)
    async with steam(replay, fake, transport=transport) as client:
        for start in (240, 340, 398):
            assert (await client.match_history_by_seq_num(start)).ok
    first = transport.sent_at[0]
    assert [at - first for at in transport.sent_at] == pytest.approx([0, 5, 10])


async def test_opendota_free_tier_never_exceeds_60_requests_a_minute(
    replay: ReplayServer,
) -> None:
    fake = FakeTime()
    transport = StampingTransport(fake)
    async with opendota(replay, fake, transport=transport) as client:
        for _ in range(61):
            assert (await client.parsed_matches()).ok
    assert transport.sent_at[4] == transport.sent_at[0]  # a burst of 5 goes at once
    assert transport.sent_at[60] - transport.sent_at[0] >= 60


# -- secrets, status, life cycle --------------------------------------------------------------


async def test_the_steam_key_never_appears_in_errors_or_logs(
    replay: ReplayServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeTime()
    errors: list[str] = []
    replay.script(
        SEQUENCE_PATH,
        Fault.server_error(500, times=2),
        Fault(body=b'{"result":{"status":8,"statusDetail":"bad key=' + STEAM_KEY.encode() + b'"}}'),
    )
    async with steam(replay, fake, attempts=2) as client:
        for _ in range(2):
            result = await client.match_history_by_seq_num(240)
            errors += [result.error or "", client.stats.last_error]
    async with SteamClient(
        STEAM_KEY, f"http://127.0.0.1:{closed_port()}", clock=fake.clock, sleep=fake.sleep
    ) as offline:
        errors.append((await offline.match_history_by_seq_num(240)).error or "")
    wrong_key = "0123456789ABCDEF0123456789ABCDEF"
    async with SteamClient(wrong_key, replay.base_url, clock=fake.clock, sleep=fake.sleep) as bad:
        forbidden = await bad.match_history_by_seq_num(240)
    errors.append(forbidden.error or "")

    assert all(error for error in errors)
    assert not [error for error in errors if STEAM_KEY in error or wrong_key in error]
    assert "is the Steam API key valid?" in (forbidden.error or "")
    assert replay.requests_to(SEQUENCE_PATH)[0].param("key") == STEAM_KEY  # it was sent
    assert "HTTP Request: GET" in caplog.text  # httpx logs each URL ...
    assert STEAM_KEY not in caplog.text
    assert wrong_key not in caplog.text


async def test_counters_for_the_status_rpc(replay: ReplayServer) -> None:
    fake = FakeTime()
    async with opendota(replay, fake) as client:
        assert client.stats.state is Reachability.UNKNOWN
        assert (await client.match(2472899185)).ok
        stats = client.stats
    assert (stats.requests_made, stats.rate_limited_responses) == (1, 0)
    assert stats.last_success_at == fake.now
    assert (stats.last_error, stats.last_error_at) == ("", None)
    assert stats.state is Reachability.REACHABLE
    assert stats.reachable is True


async def test_closing_the_client_closes_only_its_own_pool(replay: ReplayServer) -> None:
    async with opendota(replay, FakeTime()) as owned:
        pass
    assert owned.closed
    async with httpx.AsyncClient() as shared:
        async with opendota(replay, FakeTime(), http=shared) as borrowing:
            assert (await borrowing.public_matches()).ok
        assert not shared.is_closed


async def test_bugs_propagate_instead_of_becoming_results() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("a bug in the transport")

    async with OpenDotaClient(
        "http://127.0.0.1:9/api", transport=httpx.MockTransport(broken)
    ) as client:
        with pytest.raises(RuntimeError, match="a bug in the transport"):
            await client.public_matches()
        with pytest.raises(ValueError, match="positive"):
            await client.match(0)
    with pytest.raises(ValueError, match="needs a key"):
        SteamClient("")


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after_seconds("12", now=0) == 12
    assert retry_after_seconds("-3", now=0) == 0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490) == 0
    assert retry_after_seconds("soon", now=0) is None
    assert retry_after_seconds(None, now=0) is None


def test_fetched_is_either_data_or_a_reasoned_failure() -> None:
    assert Fetched.success([1], 200).ok
    failure = Fetched[list[int]].failure(FailureReason.TIMEOUT, "slow", retryable=True)
    assert not failure.ok
    assert failure.retryable
    assert failure.retyped().error == "slow"
    with pytest.raises(ValueError, match="exactly one"):
        Fetched(None)
    with pytest.raises(ValueError, match="exactly one"):
        Fetched([1], "and an error")
    with pytest.raises(ValueError, match="needs a reason"):
        Fetched(None, "an error without a reason")
