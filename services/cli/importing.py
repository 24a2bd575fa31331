"""`counterpick import` and `counterpick migrate`: the warehouse from the command line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

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
    dsn = warehouse_dsn(state_dir)
    warehouse = open_warehouse(dsn)
    constants = load_constants()
    total = ImportSummary()
    rows: list[tuple[str, ...]] = [
        (
            "file",
            "read",
            "loaded",
            "duplicates",
            "skipped (reason count)",
            "rejected (reason count)",
        )
    ]
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
