"""EtlService.ImportDumps against a real etl server and the embedded warehouse it owns: files on
the etl host are imported with progress and a summary, twice stores nothing twice, and the
errors say what is wrong (a missing path, no token, no admin role)."""

from __future__ import annotations

import gzip
from pathlib import Path

import grpc
import pytest

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from services.cli.etl_import import import_through_etl
from services.common.channels import open_channel
from tests.contract.test_dead_letters import RunningEtl, etl  # noqa: F401 - the fixture

SEED = Path(__file__).resolve().parents[2] / "seed/opendota-public-matches-2026-07/matches.csv.gz"


def write_rows(path: Path, data_dir: Path, rows: int, *, id_offset: int = 0) -> int:
    """The first `rows` ranked All Pick rows of the 2026-07 public matches, ids moved by
    `id_offset` (so they are matches the warehouse does not hold yet); returns the count."""
    source = data_dir / "opendota-public-matches-2026-07/matches.csv.gz"
    with gzip.open(source, "rt") as handle:
        header = next(handle)
        kept = []
        for line in handle:
            cells = line.split(",")
            if cells[3] == "7" and cells[4] == "22":
                cells[0] = str(int(cells[0]) + id_offset)
                kept.append(",".join(cells))
            if len(kept) == rows:
                break
    path.write_text(header + "".join(kept))
    return len(kept)


async def _import(
    running: RunningEtl, request: pb.ImportDumpsRequest, metadata: tuple[tuple[str, str], ...]
) -> list[pb.ImportDumpsResponse]:
    async with open_channel(running.address) as channel:
        stub = pb_grpc.EtlServiceStub(channel)
        return [m async for m in stub.ImportDumps(request, metadata=metadata, timeout=60)]


async def test_import_loads_files_from_the_etl_host_once(
    etl: RunningEtl,  # noqa: F811
    tmp_path: Path,
    data_dir: Path,
) -> None:
    dump = tmp_path / "few.csv"
    rows = write_rows(dump, data_dir, 40)
    progress: list[pb.ImportProgress] = []
    summary = await import_through_etl(
        etl.address, [dump], etl.keys.metadata("admin"), on_progress=progress.append
    )
    assert progress
    assert progress[-1].read == rows
    assert progress[-1].total == rows
    assert summary.total.read == rows
    assert summary.total.loaded == rows
    assert summary.stored_matches == rows
    assert [f.path for f in summary.files] == [str(dump.resolve())]
    # Twice: nothing stored twice, every match a duplicate.
    again = await import_through_etl(etl.address, [dump], etl.keys.metadata("service"))
    assert (again.total.loaded, again.total.duplicates, again.stored_matches) == (0, rows, rows)
    # The first-start seed leaves a warehouse with matches alone.
    seeded = await import_through_etl(
        etl.address, [SEED], etl.keys.metadata("admin"), only_if_empty=True
    )
    assert seeded.skipped_not_empty
    assert seeded.stored_matches == rows
    assert await _count(etl) == rows


async def _count(running: RunningEtl) -> int:
    assert running.runtime.warehouse is not None
    return running.runtime.warehouse.match_count()


async def test_a_missing_path_is_invalid_argument_and_imports_nothing(
    etl: RunningEtl,  # noqa: F811
    tmp_path: Path,
    data_dir: Path,
) -> None:
    dump = tmp_path / "few.csv"
    write_rows(dump, data_dir, 5)
    missing = tmp_path / "nowhere.csv.gz"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _import(
            etl,
            pb.ImportDumpsRequest(paths=[str(dump), str(missing)]),
            etl.keys.metadata("admin"),
        )
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    details = raised.value.details() or ""
    assert str(missing) in details
    assert "etl host" in details
    assert await _count(etl) == 0
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await _import(etl, pb.ImportDumpsRequest(), etl.keys.metadata("admin"))
    assert empty.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_file_that_is_no_dump_is_invalid_argument(
    etl: RunningEtl,  # noqa: F811
    tmp_path: Path,
) -> None:
    junk = tmp_path / "junk.csv"
    junk.write_text("not,a,dump\n1,2,3\n")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _import(etl, pb.ImportDumpsRequest(paths=[str(junk)]), etl.keys.metadata("admin"))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_anonymous_is_unauthenticated_and_a_plain_user_is_denied(
    etl: RunningEtl,  # noqa: F811
    tmp_path: Path,
    data_dir: Path,
) -> None:
    dump = tmp_path / "few.csv"
    write_rows(dump, data_dir, 5)
    request = pb.ImportDumpsRequest(paths=[str(dump)])
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await _import(etl, request, ())
    assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as user:
        await _import(etl, request, etl.keys.metadata("user", account_id=7))
    assert user.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await _count(etl) == 0
