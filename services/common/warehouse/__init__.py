"""The ClickHouse warehouse every service shares: its tables (`schema.py` and the numbered
migrations), its read queries (`direct.py`, and `etl_rpc.py` for the same reads through the etl
service that owns an embedded warehouse), and `open_reader`, which picks between the two.

The etl service owns the writes (`services/etl/repo.py`).
"""

from services.common.warehouse.reader import WarehouseReader, is_locked, open_reader

__all__ = ["WarehouseReader", "is_locked", "open_reader"]
