"""etl's pipeline against a real broker (tansu) and the embedded warehouse: N in, N stored,
bad records dead-lettered with their bytes, replays harmless."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from counterpick.events.v1 import events_pb2
from services.common.dota_constants import load_constants
from services.common.stores import ensure_kafka_topics
from services.etl.loader import FetchOutcome
from services.etl.pipeline import MatchPipeline
from services.etl.repo import Warehouse
from services.ingest.sources import public_match_ref

HEROES = sorted(load_constants().heroes)


def summary_ref(match_id: int, **overrides: object) -> events_pb2.MatchRef:
    """A publicMatches-style reference with a valid ranked All Pick draft."""
    picks = [HEROES[(match_id * 7 + k * 11) % len(HEROES)] for k in range(10)]
    if len(set(picks)) < 10:
        picks = HEROES[match_id % 50 : match_id % 50 + 10]
    row: dict[str, object] = {
        "match_id": match_id,
        "radiant_win": match_id % 2 == 0,
        "start_time": 1_785_348_579,
        "duration": 2000,
        "lobby_type": 7,
        "game_mode": 22,
        "avg_rank_tier": 54,
        "radiant_team": picks[:5],
        "dire_team": picks[5:],
    }
    row.update(overrides)
    ref = public_match_ref(row, events_pb2.MATCH_SOURCE_OPENDOTA_PUBLIC_MATCHES)
    assert ref is not None
    return ref


async def publish(bootstrap: str, topic: str, values: Sequence[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        pending = [await producer.send(topic, value, key=key) for key, value in values]
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, expected: int) -> list[events_pb2.DeadLetter]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    letters: list[events_pb2.DeadLetter] = []
    try:
        async with asyncio.timeout(20):
            while len(letters) < expected:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    letters.extend(
                        events_pb2.DeadLetter.FromString(r.value or b"") for r in records
                    )
    finally:
        await consumer.stop()
    return letters


class Topics:
    def __init__(self) -> None:
        suffix = uuid.uuid4().hex[:8]
        self.raw = f"raw-{suffix}"
        self.dlq = f"dlq-{suffix}"


@pytest.fixture
async def topics(kafka_bootstrap: str) -> Topics:
    names = Topics()
    await ensure_kafka_topics(kafka_bootstrap, {names.raw: 3, names.dlq: 1})
    return names


class FakeOpenDota:
    """A MatchFetcher double: the HTTP client itself is tested against the replay server."""

    def __init__(self, matches: dict[int, dict[str, object]]) -> None:
        self.matches = matches
        self.calls = 0

    async def fetch_match(self, match_id: int) -> FetchOutcome:
        self.calls += 1
        if match_id in self.matches:
            return FetchOutcome(dict(self.matches[match_id]))
        return FetchOutcome(None, error="404 match not found", not_found=True)


async def run_until_handled(pipeline: MatchPipeline, total: int) -> None:
    await pipeline.start()
    stop = asyncio.Event()
    runner = asyncio.create_task(pipeline.run(stop))
    try:
        async with asyncio.timeout(60):
            while True:
                stats = pipeline.stats
                if stats.matches_loaded + sum(stats.skipped.values()) + stats.dead_letters >= total:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await runner
        await pipeline.stop()


def make_pipeline(
    bootstrap: str,
    topics: Topics,
    warehouse: Warehouse,
    group: str,
    fetcher: FakeOpenDota | None = None,
) -> MatchPipeline:
    return MatchPipeline(
        bootstrap_servers=bootstrap,
        topic=topics.raw,
        dead_letter_topic=topics.dlq,
        group_id=group,
        warehouse=warehouse,
        constants=load_constants(),
        fetcher=fetcher,
        batch_size=200,
        session_timeout_ms=2000,
    )


async def test_n_matches_in_n_matches_stored_and_replay_is_harmless(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    refs = [summary_ref(1000 + i) for i in range(600)]
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    try:
        first = make_pipeline(kafka_bootstrap, topics, warehouse, "etl-a")
        await run_until_handled(first, len(refs))
        assert first.stats.matches_loaded == 600
        expected = (600, sum(r.match_id for r in refs))
        assert warehouse.checksum() == expected
        # A second group re-reads everything (a full replay): nothing is stored twice.
        replay = make_pipeline(kafka_bootstrap, topics, warehouse, "etl-b")
        await run_until_handled(replay, len(refs))
        assert warehouse.checksum() == expected
        row = warehouse.query_rows(
            "SELECT patch, skill_bracket, source FROM matches FINAL WHERE match_id = 1000"
        )
        assert row == [("7.41", "legend_ancient", "opendota_public_matches")]
    finally:
        warehouse.close()


async def test_bad_records_go_to_the_dead_letter_topic_and_the_rest_loads(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    good = [summary_ref(5000 + i) for i in range(20)]
    unknown_hero = summary_ref(6001)
    unknown_hero.summary.radiant_hero_ids[0] = 9999
    steam_negative = events_pb2.MatchRef(
        match_id=6002, source=events_pb2.MATCH_SOURCE_STEAM_SEQUENCE
    )
    steam_negative.raw_match.format = events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON
    steam_negative.raw_match.json = json.dumps(
        {
            "match_id": 6002,
            "match_seq_num": 1,
            "radiant_win": True,
            "duration": -5,
            "start_time": 1_785_348_579,
            "game_mode": 22,
            "lobby_type": 7,
            "players": [
                {"player_slot": s, "hero_id": h, "account_id": 1}
                for s, h in zip([0, 1, 2, 3, 4, 128, 129, 130, 131, 132], HEROES[:10], strict=True)
            ],
        }
    ).encode()
    missing_fields = events_pb2.MatchRef(
        match_id=6003, source=events_pb2.MATCH_SOURCE_STEAM_SEQUENCE
    )
    missing_fields.raw_match.format = events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON
    missing_fields.raw_match.json = b'{"match_id": 6003}'
    turbo = summary_ref(6004, game_mode=23)
    # 2011 beta data: one human, bots, a bot on the human's hero. Incomplete, so a skip.
    bot_game = events_pb2.MatchRef(match_id=6005, source=events_pb2.MATCH_SOURCE_STEAM_SEQUENCE)
    bot_game.raw_match.format = events_pb2.RAW_MATCH_FORMAT_STEAM_SEQUENCE_JSON
    bot_game.raw_match.json = json.dumps(
        {
            "match_id": 6005,
            "radiant_win": False,
            "duration": 31989,
            "start_time": 1301962967,
            "game_mode": 0,
            "lobby_type": 0,
            "human_players": 1,
            "players": [
                {"account_id": 42744364, "player_slot": 0, "hero_id": 16},
                *({"player_slot": s, "hero_id": h} for s, h in [(1, 7), (2, 26), (3, 30), (4, 16)]),
                *({"player_slot": s, "hero_id": 0} for s in range(128, 133)),
            ],
        }
    ).encode()
    malformed = b"\xff\xff this is not protobuf"
    values = [(str(r.match_id).encode(), r.SerializeToString()) for r in good]
    values += [
        (b"6001", unknown_hero.SerializeToString()),
        (b"6002", steam_negative.SerializeToString()),
        (b"6003", missing_fields.SerializeToString()),
        (b"6004", turbo.SerializeToString()),
        (b"6005", bot_game.SerializeToString()),
        (b"junk", malformed),
    ]
    await publish(kafka_bootstrap, topics.raw, values)
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    try:
        pipeline = make_pipeline(kafka_bootstrap, topics, warehouse, "etl-bad")
        await run_until_handled(pipeline, len(values))
        assert warehouse.match_count() == 20
        assert pipeline.stats.skipped == {"unsupported_game_mode": 1, "incomplete": 1}
        assert pipeline.stats.dead_letters == 4
        letters = await read_all(kafka_bootstrap, topics.dlq, 4)
        assert b"6005" not in {letter.key for letter in letters}
        by_key = {letter.key: letter for letter in letters}
        assert by_key[b"junk"].reason == events_pb2.DEAD_LETTER_REASON_MALFORMED_MESSAGE
        assert by_key[b"junk"].value == malformed
        assert by_key[b"6001"].reason == events_pb2.DEAD_LETTER_REASON_UNKNOWN_HERO
        assert "9999" in by_key[b"6001"].detail
        assert by_key[b"6002"].reason == events_pb2.DEAD_LETTER_REASON_INVALID_VALUE
        assert by_key[b"6003"].reason == events_pb2.DEAD_LETTER_REASON_MISSING_FIELD
        for letter in letters:
            assert letter.original_topic == topics.raw
            assert letter.service == "etl"
    finally:
        warehouse.close()


async def test_references_without_a_match_are_fetched_with_bounded_concurrency(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path, data_dir: Path
) -> None:
    detail = json.loads((data_dir / "api-samples/odota-web/matches_2472899185.json").read_text())
    fetcher = FakeOpenDota({2472899185: detail})
    refs = [
        events_pb2.MatchRef(match_id=2472899185, source=events_pb2.MATCH_SOURCE_BACKFILL),
        events_pb2.MatchRef(match_id=42, source=events_pb2.MATCH_SOURCE_BACKFILL),
    ]
    await publish(
        kafka_bootstrap,
        topics.raw,
        [(str(r.match_id).encode(), r.SerializeToString()) for r in refs],
    )
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'wh'}")
    warehouse.migrate()
    try:
        pipeline = make_pipeline(kafka_bootstrap, topics, warehouse, "etl-fetch", fetcher)
        await run_until_handled(pipeline, len(refs))
        assert warehouse.existing_match_ids([2472899185, 42]) == {2472899185}
        letters = await read_all(kafka_bootstrap, topics.dlq, 1)
        assert letters[0].reason == events_pb2.DEAD_LETTER_REASON_NOT_FOUND_UPSTREAM
        assert fetcher.calls == 2
    finally:
        warehouse.close()
