"""What the external API clients hand back: a `Fetched` result (data, or why there is none and
whether retrying can help, STYLE R11) and the counters the ingest status RPC reports."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class FailureReason(enum.StrEnum):
    """Why a fetch failed, for callers that branch on more than `retryable`."""

    TIMEOUT = "timeout"  # no (complete) answer within the timeout
    CONNECTION = "connection"  # refused, reset, DNS, or the body cut off mid-stream
    SERVER_ERROR = "server_error"  # HTTP 5xx or 408
    RATE_LIMITED = "rate_limited"  # HTTP 429, or still paused by an earlier one
    QUOTA_EXHAUSTED = "quota_exhausted"  # the day's quota is spent; `retry_at` = its reset
    NOT_FOUND = "not_found"  # HTTP 404: the thing does not exist (or is private) upstream
    CLIENT_ERROR = "client_error"  # another 3xx/4xx: our request is wrong (bad key, parameters)
    INVALID_BODY = "invalid_body"  # not JSON (truncated, HTML), or not the documented shape
    UPSTREAM_ERROR = "upstream_error"  # well-formed JSON that reports a failure (Steam status)


@dataclass(frozen=True, slots=True)
class Fetched[T]:
    """The outcome of one logical request, after its retries: data, or why there is none.

    Exactly one of `data` and `error` is set. A failure carries a `reason`, whether retrying
    can help, and, when the upstream said when (429, quota), the wall-clock `retry_at`.
    """

    data: T | None
    error: str | None = None
    retryable: bool = False
    status: int | None = None  # HTTP status of the last response, None if none arrived
    reason: FailureReason | None = None
    retry_at: float | None = None  # unix seconds; only for failures

    def __post_init__(self) -> None:
        if (self.data is None) == (self.error is None):
            raise ValueError("Fetched needs exactly one of data and error")
        if self.error is not None and self.reason is None:
            raise ValueError("a failed Fetched needs a reason")
        if self.data is not None and (self.retryable or self.reason or self.retry_at):
            raise ValueError("a successful Fetched carries no failure details")

    @classmethod
    def success(cls, data: T, status: int | None = None) -> Fetched[T]:
        """Data arrived."""
        return cls(data, status=status)

    @classmethod
    def failure(
        cls,
        reason: FailureReason,
        error: str,
        *,
        retryable: bool,
        status: int | None = None,
        retry_at: float | None = None,
    ) -> Fetched[T]:
        """No data; `error` is a human-readable message free of secrets."""
        return cls(None, error, retryable, status, reason, retry_at)

    @property
    def ok(self) -> bool:
        """True when data arrived."""
        return self.data is not None

    @property
    def not_found(self) -> bool:
        """True when the upstream said the thing does not exist (a final answer)."""
        return self.reason is FailureReason.NOT_FOUND

    def retyped[U](self) -> Fetched[U]:
        """This failure as the result of a call that would have returned a U."""
        if self.error is None or self.reason is None:
            raise ValueError("only a failure can be retyped")
        return Fetched[U].failure(
            self.reason,
            self.error,
            retryable=self.retryable,
            status=self.status,
            retry_at=self.retry_at,
        )


@dataclass(frozen=True, slots=True)
class Problem:
    """What a body check found wrong with a decoded answer (see `JsonApi.get_json`)."""

    reason: FailureReason
    message: str
    retryable: bool = False  # a wrong shape is not fixed by asking again


# Inspects a decoded JSON body before it counts as a success; None when it is fine.
BodyCheck = Callable[[Any], Problem | None]


class Reachability(enum.StrEnum):
    """How the upstream answered the client's most recent request."""

    UNKNOWN = "unknown"  # nothing sent yet
    REACHABLE = "reachable"  # a proper answer (data, or a final 404)
    RATE_LIMITED = "rate_limited"  # answered, but said to slow down or that the quota is spent
    FAILING = "failing"  # answered with 5xx, a broken body, or rejected our request
    UNREACHABLE = "unreachable"  # no answer: timeout or connection error


@dataclass
class ClientStats:
    """Counters and state for the status RPC (times are unix seconds)."""

    requests_made: int = 0  # HTTP requests actually sent, retries included
    rate_limited_responses: int = 0  # HTTP 429 answers seen
    last_success_at: float | None = None
    last_error: str = ""
    last_error_at: float | None = None
    state: Reachability = Reachability.UNKNOWN
    # The client sends nothing before this moment (after a 429 or a spent quota); a past value
    # means it is not paused.
    paused_until: float | None = None

    @property
    def reachable(self) -> bool | None:
        """Whether the upstream answered the last request at all; None before the first one."""
        if self.state is Reachability.UNKNOWN:
            return None
        return self.state is not Reachability.UNREACHABLE
