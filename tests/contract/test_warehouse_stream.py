"""ReadWarehouse streams: results are encoded batch by batch into chunks as the warehouse yields
them and decoded as chunks arrive; an abandoned read releases the warehouse; failures are
statuses (real embedded warehouse, real grpc.aio server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as etl_grpc
from services.common.config import ServiceSettings
from services.common.server import GrpcServer, registration
from services.common.warehouse.etl_rpc import EtlReader
from services.common.warehouse.ipc import CHUNK_BYTES, ipc_chunks, read_chunks
from services.etl.config import EtlSettings
from services.etl.repo import Warehouse
from services.etl.server import SERVICE_NAME, EtlServicer
from tests.contract.test_model_service import draft_table
from tests.rpc import failure
from tests.synthetic import position_matches
from tests.warehouse_drafts import insert_draft_table

DRAFTS = 60_000  # a few MB of drafts: several chunks


def test_chunks_are_produced_as_batches_are_read() -> None:
    schema = pa.schema([("value", pa.int64())])
    pulled: list[int] = []

    def batches() -> Iterator[pa.RecordBatch]:
        for index in range(8):
            pulled.append(index)
            yield pa.record_batch([pa.array(range(index * 100_000, (index + 1) * 100_000))], schema)

    chunks = ipc_chunks(pa.RecordBatchReader.from_batches(schema, batches()), chunk_bytes=1 << 18)
    first = next(chunks)
    assert len(first) == 1 << 18
    assert len(pulled) < 8  # the rest is not read yet
    rest = list(chunks)
    assert all(len(chunk) <= 1 << 18 for chunk in rest)
    table = read_chunks(iter([first, *rest]))
    assert table.num_rows == 800_000
    assert table.column("value").to_pylist()[-1] == 799_999


def test_decoding_stops_with_the_error_of_a_broken_stream() -> None:
    table = pa.table({"value": pa.array(range(500_000))})
    chunks = list(ipc_chunks(table.to_reader(), chunk_bytes=1 << 16))

    def broken() -> Iterator[bytes]:
        yield from chunks[:3]
        raise ConnectionError("etl went away")

    with pytest.raises(ConnectionError, match="etl went away"):
        read_chunks(broken())
    # A stream cut short without an error is not a valid result either.
    with pytest.raises(OSError, match="Expected to be able to read"):
        read_chunks(iter(chunks[:3]))


@dataclass
class Etl:
    warehouse: Warehouse
    stub: etl_grpc.EtlServiceAsyncStub
    port: int


@pytest.fixture
async def etl(tmp_path: Path) -> AsyncIterator[Etl]:
    warehouse = Warehouse.connect(f"chdb://{tmp_path / 'warehouse'}")
    warehouse.migrate()
    insert_draft_table(warehouse, draft_table(DRAFTS, "7.40", 1, seed=7))

    class Runtime:
        """Only what ReadWarehouse touches: the open warehouse."""

        def __init__(self, store: Warehouse) -> None:
            self.warehouse = store

    server = GrpcServer(
        name="etl",
        settings=ServiceSettings(port=0),
        services=[
            registration(
                EtlServicer(EtlSettings(), Runtime(warehouse)),  # type: ignore[arg-type]
                etl_grpc.add_EtlServiceServicer_to_server,
                SERVICE_NAME,
            )
        ],
    )
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Etl(warehouse, etl_grpc.EtlServiceStub(channel), port)
    await server.stop(0)
    warehouse.close()


async def test_a_large_read_arrives_in_chunks_and_equals_a_direct_read(etl: Etl) -> None:
    request = pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_MATCH_DRAFTS)
    sizes = [len(m.arrow_ipc) async for m in etl.stub.ReadWarehouse(request, timeout=120)]
    assert len(sizes) >= 3
    assert max(sizes) <= CHUNK_BYTES
    reader = EtlReader(f"127.0.0.1:{etl.port}")
    try:
        through_etl = await asyncio.to_thread(reader.match_drafts)
    finally:
        await asyncio.to_thread(reader.close)
    assert through_etl.num_rows == DRAFTS
    assert through_etl.equals(etl.warehouse.match_drafts())


async def test_an_abandoned_read_releases_the_warehouse(etl: Etl) -> None:
    call = etl.stub.ReadWarehouse(
        pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_MATCH_DRAFTS), timeout=120
    )
    first = await call.read()
    assert isinstance(first, pb.ReadWarehouseResponse)
    call.cancel()
    # The server's read held the warehouse lock; the cancellation must give it back.
    count = await asyncio.wait_for(asyncio.to_thread(etl.warehouse.match_count), timeout=60)
    assert count == DRAFTS
    again = etl.stub.ReadWarehouse(
        pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_LATEST_LOADED_AT), timeout=60
    )
    assert [m async for m in again]


async def test_bad_requests_and_a_failing_warehouse_are_statuses(etl: Etl) -> None:
    async def status(request: pb.ReadWarehouseRequest) -> tuple[grpc.StatusCode, dict[str, str]]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async for _ in etl.stub.ReadWarehouse(request, timeout=60):
                pass
        seen = failure(raised.value)
        return seen.code, seen.metadata

    unknown = await status(pb.ReadWarehouseRequest())
    assert unknown[0] == grpc.StatusCode.INVALID_ARGUMENT
    no_account = await status(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_PLAYER_HERO_RECORDS))
    assert no_account[0] == grpc.StatusCode.INVALID_ARGUMENT
    etl.warehouse.command("RENAME TABLE matches TO matches_away")
    try:
        broken = await status(pb.ReadWarehouseRequest(query=pb.WAREHOUSE_QUERY_HERO_COUNTS))
    finally:
        etl.warehouse.command("RENAME TABLE matches_away TO matches")
    assert broken == (grpc.StatusCode.UNAVAILABLE, {"dependency": "clickhouse"})


async def test_position_counts_read_through_the_etl_equal_a_direct_read(etl: Etl) -> None:
    """The model under `counterpick up` reads the warehouse through the etl: it must get the
    same hero x position counts as a model reading the warehouse itself, not the roles prior
    alone."""
    etl.warehouse.insert_matches(position_matches(50, 3, {5: 1, 1: 5}, "7.41", 1_780_000_000))
    direct = etl.warehouse.hero_position_counts()
    assert direct.num_rows > 0
    reader = EtlReader(f"127.0.0.1:{etl.port}")
    try:
        through_etl = await asyncio.to_thread(reader.hero_position_counts)
        one_patch = await asyncio.to_thread(reader.hero_position_counts, "7.41")
        other_patch = await asyncio.to_thread(reader.hero_position_counts, "7.40")
    finally:
        await asyncio.to_thread(reader.close)
    assert through_etl.equals(direct)
    assert one_patch.equals(etl.warehouse.hero_position_counts("7.41"))
    assert other_patch.num_rows == 0
