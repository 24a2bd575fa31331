"""The dead-letter topic and its replay records in Kafka: read them whole, send letters back.

An operations path, not a hot one: each call reads both topics from the start with a consumer
of no group (so it commits nothing and disturbs no one) and closes it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from google.protobuf import message as protobuf_message
from google.protobuf.timestamp_pb2 import Timestamp

from counterpick.events.v1 import events_pb2
from services.common.stores import ensure_kafka_topics
from services.etl.dead_letters import Letter, OpenLetter

_REASON_PREFIX = "DEAD_LETTER_REASON_"
# Reading stops at the first empty poll after every partition reached its end offset.
_POLL_MS = 300


class DeadLetterTopicError(Exception):
    """Kafka could not be read or written in time."""


def reason_name(reason: int) -> str:
    """ "unknown_hero" for DEAD_LETTER_REASON_UNKNOWN_HERO (unknown numbers as "reason_<n>")."""
    try:
        name = events_pb2.DeadLetterReason.Name(reason)  # type: ignore[arg-type]
    except ValueError:
        return f"reason_{reason}"
    return name.removeprefix(_REASON_PREFIX).lower()


def reason_number(name: str) -> int:
    """The DeadLetterReason number of a name from `reason_name` (ValueError if none)."""
    return int(events_pb2.DeadLetterReason.Value(_REASON_PREFIX + name.upper()))


def _letter(record: ConsumerRecord[bytes, bytes]) -> Letter | None:
    try:
        letter = events_pb2.DeadLetter.FromString(record.value or b"")
    except protobuf_message.DecodeError:
        return None  # not ours: the topic's contract is DeadLetter values only
    return Letter(
        partition=record.partition,
        offset=record.offset,
        key=letter.key,
        value=letter.value,
        match_id=letter.match_id if letter.HasField("match_id") else None,
        reason=reason_name(letter.reason),
        detail=letter.detail,
        failed_at=letter.failed_at.ToMicroseconds() / 1e6,
        original_topic=letter.original_topic,
        original_partition=letter.partition,
        original_offset=letter.offset,
    )


class DeadLetterTopic:
    """`match_ids_dlq` (written by the pipeline) and `match_ids_dlq_replays` (written here)."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        dead_letter_topic: str,
        replay_topic: str,
        raw_topic: str,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._bootstrap = bootstrap_servers
        self.dead_letter_topic = dead_letter_topic
        self.replay_topic = replay_topic
        self.raw_topic = raw_topic
        self._timeout = timeout_seconds

    async def ensure(self) -> None:
        """Create the replay topic if it does not exist yet."""
        await ensure_kafka_topics(
            self._bootstrap, {self.replay_topic: 1}, timeout_seconds=self._timeout
        )

    async def letters(self) -> list[Letter]:
        """Every dead letter in the topic, oldest first per partition."""
        records = await self._read_all(self.dead_letter_topic)
        return [letter for record in records if (letter := _letter(record)) is not None]

    async def replayed(self) -> set[tuple[int, int]]:
        """(partition, offset) of every dead letter that was replayed."""
        positions = set()
        for record in await self._read_all(self.replay_topic):
            try:
                replay = events_pb2.DeadLetterReplay.FromString(record.value or b"")
            except protobuf_message.DecodeError:
                continue
            positions.add((replay.dead_letter_partition, replay.dead_letter_offset))
        return positions

    async def replay(self, chosen: Sequence[OpenLetter]) -> None:
        """Publish each choice's newest record to the raw topic, then close all its letters.

        Records first, replay records after both are acknowledged: a crash in between leaves
        the letters open and a second replay sends them again, which the warehouse absorbs.
        """
        if not chosen:
            return
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, linger_ms=5)
        try:
            async with asyncio.timeout(self._timeout):
                await producer.start()
                sent = [
                    await producer.send(
                        self.raw_topic, choice.newest.value, key=choice.newest.key or None
                    )
                    for choice in chosen
                ]
                await asyncio.gather(*sent)
                now = Timestamp()
                now.GetCurrentTime()
                closes = []
                for choice in chosen:
                    for letter in choice.letters:
                        replay = events_pb2.DeadLetterReplay(
                            dead_letter_partition=letter.partition,
                            dead_letter_offset=letter.offset,
                            replayed_to_topic=self.raw_topic,
                            replayed_at=now,
                        )
                        if letter.match_id is not None:
                            replay.match_id = letter.match_id
                        closes.append(
                            await producer.send(
                                self.replay_topic,
                                replay.SerializeToString(),
                                key=letter.key or None,
                            )
                        )
                await asyncio.gather(*closes)
        except TimeoutError:
            raise DeadLetterTopicError(f"replaying to {self.raw_topic} timed out") from None
        finally:
            await producer.stop()

    async def _read_all(self, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        records: list[ConsumerRecord[bytes, bytes]] = []
        try:
            async with asyncio.timeout(self._timeout):
                await consumer.start()
                while True:
                    batch = await consumer.getmany(timeout_ms=_POLL_MS)
                    for partition_records in batch.values():
                        records.extend(partition_records)
                    if batch or not consumer.assignment():
                        continue
                    assigned = list(consumer.assignment())
                    ends = await consumer.end_offsets(assigned)
                    positions = [await consumer.position(tp) for tp in assigned]
                    if all(p >= ends[tp] for p, tp in zip(positions, assigned, strict=True)):
                        return records
        except TimeoutError:
            raise DeadLetterTopicError(f"reading {topic} timed out") from None
        finally:
            await consumer.stop()
