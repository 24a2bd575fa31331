"""Reads the warehouse through the etl service's ReadWarehouse RPC (the embedded engine's
directory belongs to the etl process). Same methods as the etl Warehouse adapter, so the
recompute and personal scores do not care which one they have."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pyarrow as pa

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc

# Counting 10M matches takes tens of seconds in the warehouse; a read is not a latency path.
READ_TIMEOUT_SECONDS = 600.0


class EtlWarehouseReader:
    """Synchronous (callers run it in a thread, as they do the direct adapter)."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 8 * 1024 * 1024)]
        )
        self._stub = pb_grpc.EtlServiceStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _read(self, request: pb.ReadWarehouseRequest) -> pa.Table:
        try:
            chunks = [
                message.arrow_ipc
                for message in self._stub.ReadWarehouse(request, timeout=READ_TIMEOUT_SECONDS)
            ]
        except grpc.RpcError as error:
            raise ConnectionError(f"etl ReadWarehouse failed: {error}") from error
        with pa.ipc.open_stream(pa.py_buffer(b"".join(chunks))) as reader:
            return reader.read_all()

    def hero_counts(
        self, patch: str | None = None, loaded_after: datetime | None = None
    ) -> pa.Table:
        """See Warehouse.hero_counts."""
        return self._read(_request(pb.WAREHOUSE_QUERY_HERO_COUNTS, patch, loaded_after))

    def pair_counts(
        self, patch: str | None = None, loaded_after: datetime | None = None
    ) -> pa.Table:
        """See Warehouse.pair_counts."""
        return self._read(_request(pb.WAREHOUSE_QUERY_PAIR_COUNTS, patch, loaded_after))

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        """See Warehouse.match_drafts."""
        return self._read(_request(pb.WAREHOUSE_QUERY_MATCH_DRAFTS, patch, None))

    def player_hero_records(self, account_id: int) -> pa.Table:
        """See Warehouse.player_hero_records."""
        request = pb.ReadWarehouseRequest(
            query=pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS, account_id=account_id
        )
        return self._read(request)

    def player_hero_groups(self) -> pa.Table:
        """See Warehouse.player_hero_groups."""
        return self._read(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_PLAYER_HERO_GROUPS))

    def latest_loaded_at(self) -> datetime | None:
        """See Warehouse.latest_loaded_at."""
        table = self._read(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_LATEST_LOADED_AT))
        value = table.column("loaded_at")[0].as_py()
        if value is None:
            return None
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment


def _request(
    query: pb.WarehouseQuery.ValueType, patch: str | None, loaded_after: datetime | None
) -> pb.ReadWarehouseRequest:
    request = pb.ReadWarehouseRequest(query=query)
    if patch is not None:
        request.patch = patch
    if loaded_after is not None:
        request.loaded_after.FromDatetime(loaded_after.astimezone(UTC))
    return request
