"""The server interceptor that turns domain errors into gRPC statuses and counts every call.

Mapping happens here and nowhere else: servicers raise `CounterpickError` subclasses (or let a bug
escape) and never call `set_code`. Each status carries a `google.rpc.ErrorInfo` detail with the
stable `ErrorReason` name, so clients can branch on it without parsing messages.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import grpc
from google.protobuf import descriptor_pool, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from counterpick.common.v1 import access_pb2  # registers the `access` method option
from services.common.errors import CounterpickError, PermissionDenied, RateLimited
from services.common.tokens import (
    Caller,
    MissingToken,
    TokenVerifier,
    bearer_token,
    current_caller,
    set_current_caller,
)

ERROR_DOMAIN = "counterpick.dev"
log = logging.getLogger(__name__)

RPC_HANDLED = Counter(
    "counterpick_grpc_server_handled",
    "gRPC calls completed by the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "counterpick_grpc_server_handling_seconds",
    "Time from call start to final status, by method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def status_for(error: CounterpickError) -> status_pb2.Status:
    """The rich gRPC status (code, message, ErrorInfo and RetryInfo details) for a domain error."""
    code = grpc.StatusCode[error.status_code_name]
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    status = status_pb2.Status(code=code.value[0], message=error.message)
    status.details.add().Pack(info)
    if isinstance(error, RateLimited):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after_seconds * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status


def _internal_status(method: str) -> status_pb2.Status:
    span_context = trace.get_current_span().get_span_context()
    reference = format(span_context.trace_id, "032x") if span_context.is_valid else "n/a"
    info = error_details_pb2.ErrorInfo(
        reason="ERROR_REASON_INTERNAL", domain=ERROR_DOMAIN, metadata={"trace_id": reference}
    )
    status = status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error in {method} (trace {reference})"
    )
    status.details.add().Pack(info)
    return status


def _unimplemented_status(method: str) -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.UNIMPLEMENTED, message=f"{method} is not implemented yet"
    )


class _Outcome:
    """Tracks the final code of one call for the metrics."""

    def __init__(self, method: str) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self.service = service
        self.name = name
        self.method = method
        self.code = grpc.StatusCode.OK
        self.started = time.perf_counter()

    def record(self) -> None:
        RPC_HANDLED.labels(self.service, self.name, self.code.name).inc()
        RPC_SECONDS.labels(self.service, self.name).observe(time.perf_counter() - self.started)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


async def _translate(
    error: BaseException, outcome: _Outcome, context: grpc.aio.ServicerContext[Any, Any]
) -> None:
    """Abort the call with the status `error` stands for; re-raise what is not ours to map."""
    if isinstance(error, grpc.aio.AbortError | asyncio.CancelledError):
        outcome.code = context.code() or grpc.StatusCode.CANCELLED
        raise error
    if isinstance(error, CounterpickError):
        outcome.code = grpc.StatusCode[error.status_code_name]
        log.info(
            "rpc failed",
            extra={
                "fields": {
                    "method": outcome.method,
                    "code": outcome.code.name,
                    "reason": error.reason,
                    "detail": error.message,
                }
            },
        )
        await _abort(context, status_for(error))
    elif isinstance(error, NotImplementedError):
        outcome.code = grpc.StatusCode.UNIMPLEMENTED
        await _abort(context, _unimplemented_status(outcome.method))
    else:
        outcome.code = grpc.StatusCode.INTERNAL
        log.error("unhandled error in %s", outcome.method, exc_info=error)
        await _abort(context, _internal_status(outcome.method))


# TypeVar rather than PEP 695 syntax: mypy only matches the stub's method-level TypeVars this way.
Req = TypeVar("Req")
Resp = TypeVar("Resp")
UnaryBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]
StreamBehavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Any]]


class StatusInterceptor(grpc.aio.ServerInterceptor):
    """Maps exceptions to statuses exactly once and records per-method call metrics."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.request_streaming:
            # The mesh has no client-streaming RPCs; leave anything else untouched.
            return handler
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(cast(StreamBehavior, handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._wrap_unary(cast(UnaryBehavior, handler.unary_unary), method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    @staticmethod
    def _wrap_unary(behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            outcome = _Outcome(method)
            try:
                return await behavior(request, context)
            except BaseException as error:
                await _translate(error, outcome, context)
                raise
            finally:
                outcome.record()

        return call

    @staticmethod
    def _wrap_stream(behavior: StreamBehavior, method: str) -> StreamBehavior | UnaryBehavior:
        if not inspect.isasyncgenfunction(behavior):
            # Write-style streaming (`await context.write(...)`, e.g. Health/Watch) is a plain
            # coroutine; grpc.aio needs the wrapper to keep that shape.
            return StatusInterceptor._wrap_unary(cast(UnaryBehavior, behavior), method)

        async def call(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            outcome = _Outcome(method)
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as error:
                await _translate(error, outcome, context)
                raise
            finally:
                outcome.record()

        return call


@dataclass(frozen=True)
class AccessRule:
    """What an RPC asks of a token: its `(counterpick.common.v1.access)` method option."""

    anonymous: bool = True
    roles: tuple[str, ...] = ()
    scope: str = ""

    def admit(self, caller: Caller | None) -> None:
        """Raise MissingToken or PermissionDenied unless `caller` may make the call."""
        if caller is None:
            if not self.anonymous:
                raise MissingToken("this call needs an access token: authorization: Bearer <token>")
            return
        if self.roles and not caller.has_any_role(*self.roles):
            raise PermissionDenied(f"this call needs one of the roles {', '.join(self.roles)}")
        # A token without a scope claim (a Steam login) may do whatever its roles allow; only
        # tokens narrowed to scopes (API keys, service credentials) are checked against them.
        if self.scope and caller.scopes and self.scope not in caller.scopes:
            raise PermissionDenied(
                f"this call needs the scope {self.scope!r}, which the token does not carry",
                metadata={"scope": self.scope},
            )


# RPCs without the option: any valid token or none, as before the option existed.
OPEN_ACCESS = AccessRule()


@functools.cache
def access_rule(method: str) -> AccessRule:
    """The access rule of a full method name ("/pkg.Service/Method"), from the option on its
    descriptor in the default pool (where every imported *_pb2 module registers itself)."""
    service, _, name = method.lstrip("/").rpartition("/")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return OPEN_ACCESS
    options = descriptor.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return OPEN_ACCESS
    access = options.Extensions[access_pb2.access]
    return AccessRule(anonymous=access.anonymous, roles=tuple(access.roles), scope=access.scope)


def _run_first[Q, R](
    handler: grpc.RpcMethodHandler[Q, R], step: Callable[[], Awaitable[None]]
) -> grpc.RpcMethodHandler[Q, R]:
    """`handler` with `step` awaited before its behavior, inside the call (so what it raises is
    mapped by StatusInterceptor like any error, and what it binds in context vars is seen)."""
    if handler.response_streaming:
        stream = cast(StreamBehavior, handler.unary_stream)

        async def call_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            await step()
            async for response in stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            call_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    unary = cast(UnaryBehavior, handler.unary_unary)

    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await step()
        return await unary(request, context)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


EXEMPT_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the bearer token of every call (when one is sent) and binds the caller.

    A token that is sent but invalid fails the call with UNAUTHENTICATED whatever the RPC, so a
    client never silently runs as anonymous. Whether the RPC admits the caller (or no caller) is
    AccessInterceptor's to decide, innermost, after the rate limiter has counted the call: a
    caller's quota needs the bound caller, and probing without a token must be counted (per
    address) before it is refused. Health and reflection are exempt. Errors are raised inside
    the handler, so StatusInterceptor (outside this one) maps them like any other.
    """

    EXEMPT_PREFIXES = EXEMPT_PREFIXES

    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.request_streaming or method.startswith(EXEMPT_PREFIXES):
            return handler
        metadata = tuple(handler_call_details.invocation_metadata or ())
        verifier = self._verifier

        async def authenticate() -> None:
            token = bearer_token(metadata)
            set_current_caller(await verifier.verify(token) if token is not None else None)

        return _run_first(handler, authenticate)


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """Enforces each RPC's access rule (the `access` method option of the contract) on the
    caller AuthInterceptor bound: no token where the RPC is not anonymous is UNAUTHENTICATED, a
    missing role or scope is PERMISSION_DENIED. RPCs without the option run anonymously too and
    decide themselves (`require_caller`). Installed innermost, inside AuthInterceptor and the
    rate limiter (GrpcServer does)."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or handler.request_streaming or method.startswith(EXEMPT_PREFIXES):
            return handler
        rule = access_rule(method)

        async def admit() -> None:
            rule.admit(current_caller())

        return _run_first(handler, admit)
