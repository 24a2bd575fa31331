"""Settings of the etl service, from environment variables."""

from __future__ import annotations

from pydantic import Field

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    KafkaSettings,
    Port,
    ServiceSettings,
    TokenSettings,
    WarehouseSettings,
)


class EtlSettings(ServiceSettings, KafkaSettings, WarehouseSettings, TokenSettings):
    """Everything the etl service reads from its environment (TokenSettings: how it verifies its
    callers; its REDIS_URL serves the token deny list alone, etl keeps nothing in Redis)."""

    port: Port = DEFAULT_GRPC_PORTS["etl"]
    kafka_consumer_group: str = "counterpick-etl"
    # Where ReplayDeadLetters records which dead letters it sent back (created at start).
    kafka_topic_dead_letter_replays: str = "match_ids_dlq_replays"
    # Matches per warehouse insert: large batches are what makes ClickHouse inserts cheap.
    etl_batch_size: int = Field(default=5000, ge=1, le=100_000)
    # Concurrent OpenDota fetches for references that carry no match (the free tier is 60/min).
    etl_fetch_concurrency: int = Field(default=4, ge=1, le=64)
    # References waiting for a fetch before the consumer pauses its partitions (it keeps
    # polling, so the group keeps it); it resumes when half of them are done.
    etl_fetch_backlog: int = Field(default=256, ge=1, le=100_000)
    opendota_base_url: str = "https://api.opendota.com/api"
    opendota_api_key: str | None = None
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1000, le=300_000)
    # Longest gap between polls before the group drops the member; the loop polls every 0.5 s
    # plus one warehouse insert, fetches never hold it.
    kafka_max_poll_interval_ms: int = Field(default=300_000, ge=1000, le=3_600_000)
