"""What a warehouse reader offers, and the one place that picks which reader a process gets."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Protocol

import pyarrow as pa

from services.common.service_tokens import TokenSource
from services.common.warehouse.direct import ClickHouseReader
from services.common.warehouse.etl_rpc import EtlReader

log = logging.getLogger(__name__)


class WarehouseReader(Protocol):
    """The reads of the model service and the recompute command (both readers satisfy it)."""

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table: ...

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table: ...

    def match_drafts(self, patch: str | None = None) -> pa.Table: ...

    def hero_position_counts(self, patch: str | None = None) -> pa.Table: ...

    def player_hero_records(self, account_id: int) -> pa.Table: ...

    def player_hero_groups(self) -> pa.Table: ...

    def latest_loaded_at(self) -> datetime | None: ...

    def close(self) -> None: ...


def is_locked(error: BaseException) -> bool:
    """Whether opening an embedded warehouse failed because another process holds its directory
    (chdb allows one owner: the etl of a running mesh, or an import)."""
    return "lock" in str(error).lower() or "EmbeddedServer" in str(error)


def open_reader(
    dsn: str | None,
    etl_address: str,
    *,
    etl_when_locked: bool = False,
    tokens: TokenSource | None = None,
) -> WarehouseReader:
    """The warehouse reader of a process that does not own the warehouse.

    With a `dsn` it reads ClickHouse directly; without one it reads through the etl service at
    `etl_address`, which owns the warehouse. `etl_when_locked` also falls back to the etl when the
    embedded warehouse at `dsn` is held by another process (a local `counterpick up`). `tokens`
    authorize the etl reads (see EtlReader).
    """
    if dsn:
        try:
            return ClickHouseReader.connect(dsn)
        except Exception as error:
            if not (etl_when_locked and is_locked(error)):
                raise
            log.info(
                "the warehouse %s is held by another process; reading it through the etl at %s",
                dsn,
                etl_address,
            )
    return EtlReader(etl_address, tokens)
