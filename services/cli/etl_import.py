"""Imports through a running etl service (EtlService.ImportDumps): `counterpick import` while
the mesh holds the embedded warehouse, and the first-start seed of `counterpick up`.

The etl reads the files from its own host; the CLI runs beside it, so it sends absolute paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from services.common.channels import open_channel
from services.common.service_tokens import Metadata

# Long enough for a few hundred thousand matches on a slow machine; progress arrives meanwhile.
IMPORT_TIMEOUT_SECONDS = 3600.0


async def import_through_etl(
    address: str,
    paths: Sequence[Path],
    metadata: Metadata,
    *,
    only_if_empty: bool = False,
    on_progress: Callable[[pb.ImportProgress], None] = lambda _: None,
) -> pb.ImportSummary:
    """Stream ImportDumps; calls `on_progress` for each progress message and returns the summary.
    Raises grpc.aio.AioRpcError as the call fails (INVALID_ARGUMENT for a bad path or file)."""
    request = pb.ImportDumpsRequest(
        paths=[str(path.resolve()) for path in paths], only_if_empty=only_if_empty
    )
    summary: pb.ImportSummary | None = None
    async with open_channel(address) as channel:
        stream = pb_grpc.EtlServiceStub(channel).ImportDumps(
            request, metadata=metadata or None, timeout=IMPORT_TIMEOUT_SECONDS
        )
        async for message in stream:
            if message.HasField("progress"):
                on_progress(message.progress)
            elif message.HasField("summary"):
                summary = message.summary
    if summary is None:
        raise RuntimeError("the etl service ended the import without a summary")
    return summary
