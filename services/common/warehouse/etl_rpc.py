"""Reads the warehouse through the etl service's ReadWarehouse RPC (the embedded engine's
directory belongs to the etl process). Same methods as the direct reader (`direct.py`), so the
recompute and personal scores do not care which one they have. Results are decoded batch by
batch as their chunks arrive (`ipc.py`), never held as one byte string."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
import pyarrow as pa

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from services.common.channels import open_channel
from services.common.errors import DependencyUnavailable
from services.common.service_tokens import ServiceTokens, TokenSource
from services.common.warehouse.ipc import read_chunks

# Counting 10M matches takes tens of seconds in the warehouse; a read is not a latency path.
READ_TIMEOUT_SECONDS = 600.0

_T = TypeVar("_T")
_ReadCall = grpc.aio.UnaryStreamCall[pb.ReadWarehouseRequest, pb.ReadWarehouseResponse]


class EtlReader:
    """Synchronous, like the direct reader: callers run it in a thread.

    The traced grpc.aio channel lives on an event loop of the reader's own, in a thread of its
    own, so a read works from any thread, the caller's event loop included, and continues the
    caller's trace (the calling thread's context travels with each call onto that loop).

    Every call carries a service token (etl admits only admin and service callers): `tokens`,
    else the credential the process environment provisions (SERVICE_CREDENTIAL[_FILE]), which
    is how the model service, building its reader from an address alone, reads as itself.
    """

    def __init__(self, address: str, tokens: TokenSource | None = None) -> None:
        self._tokens: TokenSource = (
            tokens if tokens is not None else ServiceTokens.from_environment()
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="etl-warehouse-reader", daemon=True
        )
        self._thread.start()
        self._channel = self._call(self._open(address))
        self._stub = pb_grpc.EtlServiceStub(self._channel)

    @staticmethod
    async def _open(address: str) -> grpc.aio.Channel:
        return open_channel(address)

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def close(self) -> None:
        """Close the channel and stop the reader's loop."""
        if self._loop.is_closed():
            return
        self._call(self._channel.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def authorize(self, tokens: TokenSource) -> None:
        """Send `tokens`' token from now on (for a client such as the CLI that knows better)."""
        self._tokens = tokens

    async def _start(self, request: pb.ReadWarehouseRequest) -> _ReadCall:
        try:
            metadata = await self._tokens.metadata()
        except DependencyUnavailable as error:
            raise ConnectionError(f"etl ReadWarehouse needs a service token: {error}") from error
        return self._stub.ReadWarehouse(
            request, metadata=metadata or None, timeout=READ_TIMEOUT_SECONDS
        )

    def _chunks(self, request: pb.ReadWarehouseRequest) -> Iterator[bytes]:
        """The chunks of one ReadWarehouse call, each received only when the decoder asks for
        more; a call abandoned half-way is cancelled."""
        call = self._call(self._start(request))
        try:
            while True:
                try:
                    message = self._call(call.read())
                except grpc.RpcError as error:
                    raise ConnectionError(f"etl ReadWarehouse failed: {error}") from error
                if message is grpc.aio.EOF:
                    return
                assert isinstance(message, pb.ReadWarehouseResponse)
                yield message.arrow_ipc
        finally:
            self._loop.call_soon_threadsafe(call.cancel)

    def _read(self, request: pb.ReadWarehouseRequest) -> pa.Table:
        return read_chunks(self._chunks(request))

    def hero_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """See ClickHouseReader.hero_counts."""
        return self._read(
            _request(pb.WAREHOUSE_QUERY_HERO_COUNTS, patch, loaded_after, loaded_until)
        )

    def pair_counts(
        self,
        patch: str | None = None,
        loaded_after: datetime | None = None,
        loaded_until: datetime | None = None,
    ) -> pa.Table:
        """See ClickHouseReader.pair_counts."""
        return self._read(
            _request(pb.WAREHOUSE_QUERY_PAIR_COUNTS, patch, loaded_after, loaded_until)
        )

    def match_drafts(self, patch: str | None = None) -> pa.Table:
        """See ClickHouseReader.match_drafts."""
        return self._read(_request(pb.WAREHOUSE_QUERY_MATCH_DRAFTS, patch, None, None))

    def hero_position_counts(self, patch: str | None = None) -> pa.Table:
        """See ClickHouseReader.hero_position_counts."""
        return self._read(_request(pb.WAREHOUSE_QUERY_HERO_POSITION_COUNTS, patch, None, None))

    def player_hero_records(self, account_id: int) -> pa.Table:
        """See ClickHouseReader.player_hero_records."""
        request = pb.ReadWarehouseRequest(
            query=pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS, account_id=account_id
        )
        return self._read(request)

    def player_hero_groups(self) -> pa.Table:
        """See ClickHouseReader.player_hero_groups."""
        return self._read(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_PLAYER_HERO_GROUPS))

    def latest_loaded_at(self) -> datetime | None:
        """See ClickHouseReader.latest_loaded_at."""
        table = self._read(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_LATEST_LOADED_AT))
        value = table.column("loaded_at")[0].as_py()
        if value is None:
            return None
        moment: datetime = value if value.tzinfo else value.replace(tzinfo=UTC)
        return moment


def _request(
    query: pb.WarehouseQuery.ValueType,
    patch: str | None,
    loaded_after: datetime | None,
    loaded_until: datetime | None,
) -> pb.ReadWarehouseRequest:
    request = pb.ReadWarehouseRequest(query=query)
    if patch is not None:
        request.patch = patch
    if loaded_after is not None:
        request.loaded_after.FromDatetime(loaded_after.astimezone(UTC))
    if loaded_until is not None:
        request.loaded_until.FromDatetime(loaded_until.astimezone(UTC))
    return request
