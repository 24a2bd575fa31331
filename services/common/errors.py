"""Typed domain errors: domain code raises these, the gRPC edge maps them to a status exactly once.

Domain modules never import grpc; each error names its gRPC status code by string so the mapping
lives in one place (`services.common.interceptors`).
"""

from __future__ import annotations

from collections.abc import Mapping


class CounterpickError(Exception):
    """Base of every error a client is meant to see, with a stable machine-readable reason."""

    status_code_name = "INTERNAL"
    reason = "ERROR_REASON_INTERNAL"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(CounterpickError):
    """The request is malformed or names something that cannot exist (unknown hero, bad range)."""

    status_code_name = "INVALID_ARGUMENT"
    reason = "ERROR_REASON_INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        merged = dict(metadata or {})
        if field is not None:
            merged["field"] = field
        super().__init__(message, metadata=merged)
        if reason is not None:
            self.reason = reason


class NotFound(CounterpickError):
    """The addressed resource does not exist."""

    status_code_name = "NOT_FOUND"
    reason = "ERROR_REASON_NOT_FOUND"


class FailedPrecondition(CounterpickError):
    """The request is valid but the system is not in a state to run it (e.g. a stale version)."""

    status_code_name = "FAILED_PRECONDITION"
    reason = "ERROR_REASON_ILLEGAL_DRAFT_ACTION"


class Unauthenticated(CounterpickError):
    """Missing, malformed, expired or forged credentials."""

    status_code_name = "UNAUTHENTICATED"
    reason = "ERROR_REASON_TOKEN_INVALID"


class PermissionDenied(CounterpickError):
    """Valid credentials that do not allow this call."""

    status_code_name = "PERMISSION_DENIED"
    reason = "ERROR_REASON_PERMISSION_DENIED"


class RateLimited(CounterpickError):
    """The caller exceeded its quota; `retry_after_seconds` says when to come back."""

    status_code_name = "RESOURCE_EXHAUSTED"
    reason = "ERROR_REASON_RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message, metadata={"retry_after_seconds": f"{retry_after_seconds:g}"})
        self.retry_after_seconds = retry_after_seconds


class DependencyUnavailable(CounterpickError):
    """A store or peer service this call needs is down; retrying later may succeed."""

    status_code_name = "UNAVAILABLE"
    reason = "ERROR_REASON_DEPENDENCY_UNAVAILABLE"

    def __init__(self, dependency: str, message: str | None = None) -> None:
        super().__init__(
            message or f"{dependency} is unavailable", metadata={"dependency": dependency}
        )
        self.dependency = dependency
