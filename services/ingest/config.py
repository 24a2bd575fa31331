"""Settings of the ingest service, from environment variables."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from services.common.config import (
    DEFAULT_GRPC_PORTS,
    KafkaSettings,
    Port,
    RedisSettings,
    ServiceSettings,
    TokenSettings,
)

SourceName = Literal["opendota_public", "opendota_parsed", "steam_sequence"]


class IngestSettings(ServiceSettings, KafkaSettings, RedisSettings, TokenSettings):
    """Everything the ingest service reads from its environment."""

    port: Port = DEFAULT_GRPC_PORTS["ingest"]
    # Comma-separated in the environment: INGEST_SOURCES=opendota_public,steam_sequence
    ingest_sources: Annotated[list[SourceName], NoDecode] = Field(
        default_factory=lambda: list[SourceName](["opendota_public"])
    )
    opendota_base_url: str = "https://api.opendota.com/api"
    opendota_api_key: str | None = None
    steam_base_url: str = "https://api.steampowered.com"
    steam_api_key: str | None = None
    # Pause between polls when a source is caught up (a short page).
    ingest_idle_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Requests one poll of a listing source may send: the head, then the gaps and the late window
    # (what is left unread stays a gap for the next polls, never skipped).
    ingest_max_pages_per_poll: int = Field(default=10, ge=1, le=1000)
    # Listing sources re-read ids of matches that started less than this long ago, since OpenDota
    # lists a match when it ends (see sources.MatchIdPagedSource). Must exceed the longest game.
    ingest_late_window_seconds: float = Field(default=3 * 3600, ge=0, le=7 * 86400)
    # Longest pause of a failing poller before its next restart.
    ingest_max_backoff_seconds: float = Field(default=600.0, gt=0, le=3600)
    # OpenDota pacing: the free tier allows 60 a minute; a paid key more.
    opendota_requests_per_minute: float = Field(default=60.0, gt=5, le=100_000)
    opendota_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    kafka_enable_idempotence: bool = False

    @field_validator("ingest_sources", mode="before")
    @classmethod
    def _split_sources(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @model_validator(mode="after")
    def _steam_needs_a_key(self) -> IngestSettings:
        if "steam_sequence" in self.ingest_sources and not self.steam_api_key:
            raise ValueError("INGEST_SOURCES has steam_sequence but STEAM_API_KEY is not set")
        return self
