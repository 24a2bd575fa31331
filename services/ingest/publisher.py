"""Publishes match references to Kafka `match_ids_raw`, keyed by match id, with the trace context.

`publish` returns only after Kafka acknowledged every message, so callers may advance their
cursor afterwards: a crash before the acknowledgement re-publishes, never skips (etl's sink is
idempotent, so re-publishing is harmless).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from opentelemetry import trace

from counterpick.events.v1 import events_pb2
from services.common.telemetry import inject_kafka_headers

tracer = trace.get_tracer(__name__)


class MatchRefPublisher:
    """A Kafka producer of `counterpick.events.v1.MatchRef` messages."""

    def __init__(
        self, bootstrap_servers: str, topic: str, *, enable_idempotence: bool = False
    ) -> None:
        self.topic = topic
        # Idempotence belongs on in production (Apache Kafka); tansu does not implement it.
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            linger_ms=10,
            enable_idempotence=enable_idempotence,
        )

    async def start(self) -> None:
        """Connect to the brokers."""
        await self._producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self._producer.stop()

    async def publish(self, refs: Sequence[events_pb2.MatchRef]) -> None:
        """Send every reference and wait until Kafka acknowledged all of them."""
        if not refs:
            return
        with tracer.start_as_current_span("ingest.publish") as span:
            span.set_attribute("counterpick.ingest.messages", len(refs))
            headers = inject_kafka_headers()
            pending = [
                await self._producer.send(
                    self.topic,
                    ref.SerializeToString(),
                    key=str(ref.match_id).encode(),
                    headers=headers,
                )
                for ref in refs
            ]
            await asyncio.gather(*pending)
