"""gRPC failures -> GraphQL errors, mapped once, and the masking of everything unexpected.

Every resolver lets `grpc.aio.AioRpcError` propagate; `GraphQLErrors` (a schema extension)
rewrites each error of a result exactly once:

- an `EdgeError` (raised by resolvers, or built here from a gRPC status and its
  google.rpc.ErrorInfo / RetryInfo) keeps its message and gets a stable `extensions.code`;
- a parse error gets GRAPHQL_PARSE_FAILED and a validation error GRAPHQL_VALIDATION_FAILED (the
  limits in limits.py add QUERY_TOO_COMPLEX), and the HTTP answer becomes 400 (see schema.py);
- anything else is a bug: logged with its trace id and answered as "internal error",
  INTERNAL_SERVER_ERROR, with the trace id in extensions so a user report finds the log line.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from google.rpc import error_details_pb2
from graphql import GraphQLError, GraphQLSyntaxError
from grpc_status import rpc_status
from opentelemetry import trace
from strawberry.extensions import SchemaExtension

from gateway.graphql.limits import limit_extensions

log = logging.getLogger(__name__)

PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL = "INTERNAL_SERVER_ERROR"
# Codes meaning "the request itself is wrong"; an answer with only these is HTTP 400.
REQUEST_CODES = frozenset({PARSE_FAILED, VALIDATION_FAILED, "QUERY_TOO_COMPLEX"})

# gRPC status -> GraphQL code, for statuses whose ErrorInfo reason does not decide it.
_BY_STATUS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAUTHENTICATED: "UNAUTHENTICATED",
    grpc.StatusCode.PERMISSION_DENIED: "FORBIDDEN",
    grpc.StatusCode.NOT_FOUND: "NOT_FOUND",
    grpc.StatusCode.INVALID_ARGUMENT: "BAD_USER_INPUT",
    grpc.StatusCode.OUT_OF_RANGE: "BAD_USER_INPUT",
    grpc.StatusCode.FAILED_PRECONDITION: "BAD_USER_INPUT",
    grpc.StatusCode.ALREADY_EXISTS: "CONFLICT",
    grpc.StatusCode.ABORTED: "CONFLICT",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "RATE_LIMITED",
    grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
    grpc.StatusCode.DEADLINE_EXCEEDED: "UNAVAILABLE",
    grpc.StatusCode.CANCELLED: "UNAVAILABLE",
}
_BY_REASON = {"ERROR_REASON_VERSION_MISMATCH": "VERSION_MISMATCH"}


class EdgeError(GraphQLError):
    """An error the client is meant to see, with a stable `extensions.code`."""

    def __init__(self, message: str, code: str, **extensions: Any) -> None:
        super().__init__(message, extensions={"code": code, **extensions})


def unauthenticated(what: str) -> EdgeError:
    """The caller sent no token where one is needed (checked before any gRPC call)."""
    return EdgeError(
        f"{what} needs an access token (Authorization: Bearer ...)",
        "UNAUTHENTICATED",
        reason="ERROR_REASON_UNAUTHENTICATED",
    )


def bad_input(message: str, reason: str = "ERROR_REASON_INVALID_ARGUMENT") -> EdgeError:
    """Input the edge itself refuses before calling a service."""
    return EdgeError(message, "BAD_USER_INPUT", reason=reason)


def _details(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str], float | None]:
    reason, metadata, retry_after = "", {}, None
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(retry):
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    return reason, metadata, retry_after


def from_rpc_error(error: grpc.aio.AioRpcError) -> EdgeError | None:
    """The GraphQL error for a failed gRPC call, or None when the failure is a bug (INTERNAL,
    UNKNOWN, UNIMPLEMENTED, ...) that must be masked."""
    try:
        reason, metadata, retry_after = _details(error)
    except ValueError:  # a rich status that disagrees with the call's own: trust the code
        reason, metadata, retry_after = "", {}, None
    code = _BY_REASON.get(reason) or _BY_STATUS.get(error.code())
    if code is None:
        return None
    extensions: dict[str, Any] = {}
    if reason:
        extensions["reason"] = reason
    if code == "RATE_LIMITED":
        extensions["retryAfter"] = retry_after if retry_after is not None else 1.0
    if code == "UNAVAILABLE" and "dependency" in metadata:
        extensions["dependency"] = metadata["dependency"]
    if "field" in metadata:
        extensions["field"] = metadata["field"]
    if code == "UNAVAILABLE" and error.code() != grpc.StatusCode.UNAVAILABLE:
        message = "a backend service did not answer in time"
    elif code == "UNAVAILABLE" and not reason:
        # A transport failure (nobody listening): its details name internal addresses.
        message = "a backend service is unavailable"
    else:
        message = error.details() or code.lower()
    return EdgeError(message, code, **extensions)


def trace_id() -> str:
    """The current trace id (32 hex digits), or a fresh random one outside a trace."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else uuid.uuid4().hex


def classify(error: GraphQLError, trace_reference: str) -> GraphQLError:
    """The error as the client sees it (see the module docstring)."""
    original = error.original_error
    if isinstance(original, grpc.aio.AioRpcError):
        mapped = from_rpc_error(original)
        if mapped is not None:
            return GraphQLError(
                mapped.message,
                nodes=error.nodes,
                path=error.path,
                extensions=mapped.extensions,
            )
    elif isinstance(error, EdgeError) or isinstance(original, EdgeError):
        return error
    elif original is None:
        if error.extensions and "code" in error.extensions:
            return error
        limits = limit_extensions(error)
        if limits is not None:
            error.extensions = {**(error.extensions or {}), **limits}
            return error
        code = PARSE_FAILED if isinstance(error, GraphQLSyntaxError) else VALIDATION_FAILED
        error.extensions = {**(error.extensions or {}), "code": code}
        return error
    log.error(
        "internal error in GraphQL resolver at %s (trace %s)",
        ".".join(str(p) for p in error.path or ()),
        trace_reference,
        exc_info=original,
    )
    return GraphQLError(
        "internal error",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": INTERNAL, "traceId": trace_reference},
    )


class GraphQLErrors(SchemaExtension):
    """Applies `classify` to every error of every result (queries, mutations and each message
    of a subscription)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            reference = trace_id()
            result.errors = [classify(error, reference) for error in errors]
