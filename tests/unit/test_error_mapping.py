"""Domain errors become one rich gRPC status each, with a machine-readable reason."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2

from services.common.errors import (
    CounterpickError,
    DependencyUnavailable,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from services.common.interceptors import ERROR_DOMAIN, status_for


def _error_info(error: CounterpickError) -> error_details_pb2.ErrorInfo:
    info = error_details_pb2.ErrorInfo()
    assert status_for(error).details[0].Unpack(info)
    return info


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            InvalidArgument("hero 9999 does not exist", field="hero_id"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (NotFound("draft d-1 not found"), grpc.StatusCode.NOT_FOUND),
        (Unauthenticated("token expired"), grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDenied("not your profile"), grpc.StatusCode.PERMISSION_DENIED),
        (DependencyUnavailable("redis"), grpc.StatusCode.UNAVAILABLE),
        (RateLimited("slow down", retry_after_seconds=2.5), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
def test_each_error_maps_to_its_status_code(error: CounterpickError, code: grpc.StatusCode) -> None:
    status = status_for(error)
    assert status.code == code.value[0]
    assert status.message == error.message
    assert _error_info(error).domain == ERROR_DOMAIN


def test_invalid_argument_names_the_field_and_a_specific_reason() -> None:
    error = InvalidArgument(
        "hero 9999 does not exist", field="hero_id", reason="ERROR_REASON_UNKNOWN_HERO"
    )
    info = _error_info(error)
    assert info.reason == "ERROR_REASON_UNKNOWN_HERO"
    assert info.metadata["field"] == "hero_id"


def test_rate_limit_carries_retry_info() -> None:
    status = status_for(RateLimited("slow down", retry_after_seconds=2.5))
    retry = error_details_pb2.RetryInfo()
    assert status.details[1].Unpack(retry)
    assert retry.retry_delay.ToMilliseconds() == 2500


def test_dependency_unavailable_names_the_dependency() -> None:
    info = _error_info(DependencyUnavailable("postgresql"))
    assert info.reason == "ERROR_REASON_DEPENDENCY_UNAVAILABLE"
    assert info.metadata["dependency"] == "postgresql"
