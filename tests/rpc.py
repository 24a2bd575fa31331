"""Calling mesh services from tests: how a failed call failed, and a caller's bearer metadata."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Failure:
    """What a failed call says: code, message, and the google.rpc ErrorInfo and RetryInfo the
    server attached ("" and {} when it attached none)."""

    code: grpc.StatusCode
    reason: str
    metadata: dict[str, str]
    message: str
    retry_delay: float | None = None
    domain: str = field(default="", kw_only=True)


def failure(error: grpc.aio.AioRpcError) -> Failure:
    """Describe an aborted call from its status and the rich status details in its trailers."""
    reason, domain, metadata, retry = "", "", {}, None
    # from_call also checks that the rich status agrees with the call's own code and message.
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(retry_info):
            retry = retry_info.retry_delay.ToNanoseconds() / 1e9
    return Failure(error.code(), reason, metadata, error.details() or "", retry, domain=domain)


async def fails(call: Awaitable[object]) -> Failure:
    """Await a stub call that must fail, and describe how."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return failure(raised.value)


def bearer(token: str) -> Metadata:
    """Call metadata presenting `token`."""
    return (("authorization", f"Bearer {token}"),)
