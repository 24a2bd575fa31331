"""Draft-only matches straight into the warehouse, for tests and benchmarks that generate
millions of rows: no CleanMatch objects and no player rows, which a draft-only match has nothing
to put in."""

from __future__ import annotations

import pyarrow as pa

from services.common.warehouse.schema import MATCH_SCHEMA
from services.etl.repo import Warehouse


def insert_draft_table(warehouse: Warehouse, table: pa.Table) -> None:
    """Write draft-only matches given as an Arrow table of `MATCH_SCHEMA` columns."""
    warehouse.insert_arrow("matches", table.select(MATCH_SCHEMA.names).cast(MATCH_SCHEMA))
