"""`counterpick dlq`: the open dead letters by reason, and replaying them after a fix.

Goes through the etl service (ListDeadLetters / ReplayDeadLetters), so it works against a running
mesh, as an admin (a short-lived token minted from the deployment's signing keys in the state
dir): the etl address comes from `--etl-address`, else from the state file `counterpick up`
keeps in `--state-dir`, else ETL_ADDR or the default port.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from counterpick.etl.v1 import etl_service_pb2 as pb
from counterpick.etl.v1 import etl_service_pb2_grpc as pb_grpc
from counterpick.events.v1 import events_pb2
from services.cli.mesh_state import etl_address
from services.cli.token import operator_metadata
from services.common.channels import open_channel
from services.common.service_tokens import Metadata

_PREFIX = "DEAD_LETTER_REASON_"
REASONS = tuple(
    value.name.removeprefix(_PREFIX).lower()
    for value in events_pb2.DeadLetterReason.DESCRIPTOR.values
    if value.number != 0
)
CALL_TIMEOUT_SECONDS = 60.0


def _reason(name: str) -> events_pb2.DeadLetterReason.ValueType:
    return events_pb2.DeadLetterReason.Value(_PREFIX + name.upper())


def _reason_label(number: int) -> str:
    return events_pb2.DeadLetterReason.Name(number).removeprefix(_PREFIX).lower()  # type: ignore[arg-type]


def _when(entry: pb.DeadLetterEntry) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.failed_at.seconds))


def format_listing(response: pb.ListDeadLettersResponse) -> str:
    """Counts per reason, then one line per open letter."""
    lines = [f"{response.total} open dead letter(s); {response.replayed} replayed earlier"]
    if response.counts:
        lines += ["", f"  {'reason':<20} {'count':>7}"]
        lines += [f"  {_reason_label(c.reason):<20} {c.count:>7}" for c in response.counts]
    if response.entries:
        lines += ["", f"  {'match_id':<12} {'reason':<20} {'failed at (UTC)':<20} detail"]
        for entry in response.entries:
            match = str(entry.match_id) if entry.HasField("match_id") else "-"
            lines.append(
                f"  {match:<12} {_reason_label(entry.reason):<20} {_when(entry):<20} {entry.detail}"
            )
        if len(response.entries) < response.total:
            lines.append(f"  ... {response.total - len(response.entries)} more (--limit)")
    return "\n".join(lines)


async def _list(
    address: str, request: pb.ListDeadLettersRequest, metadata: Metadata
) -> pb.ListDeadLettersResponse:
    async with open_channel(address) as channel:
        response: pb.ListDeadLettersResponse = await pb_grpc.EtlServiceStub(
            channel
        ).ListDeadLetters(request, metadata=metadata or None, timeout=CALL_TIMEOUT_SECONDS)
        return response


async def _replay(
    address: str, request: pb.ReplayDeadLettersRequest, metadata: Metadata
) -> pb.ReplayDeadLettersResponse:
    async with open_channel(address) as channel:
        response: pb.ReplayDeadLettersResponse = await pb_grpc.EtlServiceStub(
            channel
        ).ReplayDeadLetters(request, metadata=metadata or None, timeout=CALL_TIMEOUT_SECONDS)
        return response


def run_dlq(
    state_dir: Path,
    *,
    action: str,
    address: str | None,
    reason: str | None,
    match_ids: Sequence[int],
    replay_all: bool,
    limit: int,
) -> int:
    """List (action "list") or replay (action "replay") dead letters; the exit code."""
    target = etl_address(state_dir, address)
    # etl's dead-letter RPCs need an admin token.
    metadata = operator_metadata(state_dir)
    try:
        if action == "list":
            listing = pb.ListDeadLettersRequest(match_ids=list(match_ids), limit=limit)
            if reason:
                listing.reason = _reason(reason)
            print(format_listing(asyncio.run(_list(target, listing, metadata))))
            return 0
        chosen = sum((bool(reason), bool(match_ids), replay_all))
        if chosen != 1:
            print(
                "counterpick dlq replay: choose exactly one of --match-id, --reason, --all",
                file=sys.stderr,
            )
            return 2
        request = pb.ReplayDeadLettersRequest()
        if match_ids:
            request.match_ids.match_ids.extend(match_ids)
        elif reason:
            request.reason = _reason(reason)
        else:
            request.all = True
        response = asyncio.run(_replay(target, request, metadata))
    except grpc.aio.AioRpcError as error:
        print(
            f"counterpick dlq: etl at {target}: {error.code().name}: {error.details()}",
            file=sys.stderr,
        )
        return 1
    print(f"replayed {response.replayed_count} dead letter(s) into the raw topic")
    for entry in response.replayed:
        match = str(entry.match_id) if entry.HasField("match_id") else "-"
        print(f"  {match:<12} {_reason_label(entry.reason):<20} {entry.detail}")
    return 0
