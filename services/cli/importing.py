"""`counterpick import` and `counterpick migrate`: the warehouse from the command line.

While `counterpick up` runs (its state dir says so), or when the embedded warehouse is held by
another process, `import` goes through the etl service that owns the warehouse (ImportDumps, as
an admin minted from the state dir); otherwise it opens the warehouse itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from counterpick.etl.v1 import etl_service_pb2 as etl_pb
from services.cli.mesh_state import etl_address, running_address
from services.common.dota_constants import load_constants
from services.common.warehouse import is_locked
from services.etl.dumps import DumpFormatError
from services.etl.importer import ImportSummary, import_file
from services.etl.repo import Warehouse


def warehouse_dsn(state_dir: Path) -> str:
    """WAREHOUSE_DSN if set, else the embedded warehouse `counterpick up` uses in `state_dir`."""
    return os.environ.get("WAREHOUSE_DSN") or f"chdb://{(state_dir / 'warehouse').resolve()}"


def open_warehouse(dsn: str) -> Warehouse:
    """Open and migrate, turning chdb's lock error into advice."""
    try:
        warehouse = Warehouse.connect(dsn)
    except Exception as error:
        if is_locked(error):
            raise SystemExit(
                f"the embedded warehouse {dsn} is open in another process (is `counterpick up` "
                "running?); stop it first, or set WAREHOUSE_DSN to a ClickHouse server"
            ) from None
        raise SystemExit(f"cannot open the warehouse {dsn}: {error}") from None
    warehouse.migrate()
    return warehouse


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _advance(progress: tqdm[Any]) -> Callable[[int], None]:
    def advance(count: int) -> None:
        progress.update(count)

    return advance


def _summary_rows(path: str, summary: ImportSummary) -> tuple[str, ...]:
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(summary.skipped.items())) or "-"
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(summary.rejected.items())) or "-"
    return (
        path,
        str(summary.read),
        str(summary.loaded),
        str(summary.duplicates),
        skipped,
        rejected,
    )


def run_import(paths: list[Path], state_dir: Path) -> int:
    """Import every path; prints a summary table; non-zero exit on an unreadable file."""
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"counterpick import: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if running_address(state_dir, "etl") is not None:
        return run_import_through_etl(paths, state_dir)
    dsn = warehouse_dsn(state_dir)
    try:
        warehouse = open_warehouse(dsn)
    except SystemExit:
        if not dsn.startswith("chdb://") or not _locked(dsn):
            raise
        # Held by an etl this state dir does not know of (`counterpick serve etl`, say).
        return run_import_through_etl(paths, state_dir)
    return _import_directly(paths, warehouse, dsn)


def _locked(dsn: str) -> bool:
    try:
        Warehouse.connect(dsn).close()
    except Exception as error:
        return is_locked(error)
    return False


def _import_directly(paths: list[Path], warehouse: Warehouse, dsn: str) -> int:
    constants = load_constants()
    total = ImportSummary()
    rows: list[tuple[str, ...]] = [_HEADER]
    exit_code = 0
    try:
        with tqdm(unit=" matches", unit_scale=True, file=sys.stderr, disable=None) as progress:
            for path in paths:
                progress.set_description(path.name)
                try:
                    summary = import_file(
                        path, warehouse, constants, on_progress=_advance(progress)
                    )
                except DumpFormatError as error:
                    print(f"\ncounterpick import: {error}", file=sys.stderr)
                    exit_code = 1
                    break
                total.add(summary)
                rows.append(_summary_rows(str(path), summary))
        rows.append(_summary_rows("total", total))
        print(_table(rows))
        for line in total.first_rejections:
            print(f"  rejected: {line}")
        print(f"warehouse {dsn}: {warehouse.match_count()} matches stored")
    finally:
        warehouse.close()
    return exit_code


_HEADER = (
    "file",
    "read",
    "loaded",
    "duplicates",
    "skipped (reason count)",
    "rejected (reason count)",
)


def _proto_rows(counts: etl_pb.ImportCounts, name: str) -> tuple[str, ...]:
    skipped = (
        ", ".join(
            f"{etl_pb.SkipReason.Name(s.reason).removeprefix('SKIP_REASON_').lower()} {s.count}"
            for s in counts.skipped
        )
        or "-"
    )
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(counts.rejected.items())) or "-"
    return (
        name,
        str(counts.read),
        str(counts.loaded),
        str(counts.duplicates),
        skipped,
        rejected,
    )


def run_import_through_etl(paths: list[Path], state_dir: Path) -> int:
    """Import through the running etl's ImportDumps (the files are read where etl runs: this
    machine, for `counterpick up`)."""
    import asyncio

    import grpc

    from services.cli.etl_import import import_through_etl
    from services.cli.token import operator_metadata

    address = etl_address(state_dir, None)
    print(f"the warehouse is held by a running etl; importing through {address}", file=sys.stderr)
    with tqdm(unit=" records", unit_scale=True, file=sys.stderr, disable=None) as progress:
        done_before = 0  # records of the files already finished
        current = [0, 0]  # file index, records read in it

        def advance(message: etl_pb.ImportProgress) -> None:
            nonlocal done_before
            if message.file_index != current[0]:
                done_before += current[1]
                current[0], current[1] = message.file_index, 0
                progress.set_description(Path(message.path).name)
            progress.update(done_before + message.read - progress.n)
            current[1] = message.read

        progress.set_description(paths[0].name)
        try:
            summary = asyncio.run(
                import_through_etl(
                    address, paths, operator_metadata(state_dir), on_progress=advance
                )
            )
        except grpc.aio.AioRpcError as error:
            progress.close()
            print(f"counterpick import: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
    rows: list[tuple[str, ...]] = [_HEADER]
    rows += [_proto_rows(counts, counts.path) for counts in summary.files]
    rows.append(_proto_rows(summary.total, "total"))
    print(_table(rows))
    for line in summary.first_rejections:
        print(f"  rejected: {line}")
    print(f"warehouse (through etl {address}): {summary.stored_matches} matches stored")
    return 0


def run_migrate(state_dir: Path) -> int:
    """Apply pending warehouse migrations, then the user service's PostgreSQL migrations to
    POSTGRES_DSN (the user service also applies them itself when it starts)."""
    import asyncio

    import asyncpg

    from services.user.migrations import migrate_from_environment

    dsn = warehouse_dsn(state_dir)
    warehouse = open_warehouse(dsn)
    warehouse.close()
    print(f"warehouse {dsn} is at the latest schema")
    try:
        run = asyncio.run(migrate_from_environment(os.environ))
    except (OSError, TimeoutError, asyncpg.PostgresError, ValueError, RuntimeError) as error:
        # Unreachable, refused (no such database, bad password), a bad USER_POSTGRES_SCHEMA,
        # or a MigrationError (an applied migration was edited): say so, no traceback.
        print(f"counterpick migrate: user migrations failed: {error}", file=sys.stderr)
        return 1
    if run is None:
        print("POSTGRES_DSN is not set: user migrations skipped (the user service applies them)")
        return 0
    applied = ", ".join(run.applied) if run.applied else "nothing pending"
    print(f"postgres {run.dsn} schema {run.schema} is at the latest schema (applied: {applied})")
    return 0
