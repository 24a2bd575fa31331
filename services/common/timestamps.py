"""Conversions to google.protobuf.Timestamp used by every servicer."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def to_timestamp(moment: float | datetime) -> Timestamp:
    """A Timestamp of unix seconds (fractions kept to the nanosecond) or an aware datetime."""
    stamp = Timestamp()
    if isinstance(moment, datetime):
        stamp.FromDatetime(moment)
    else:
        stamp.FromNanoseconds(int(moment * 1e9))
    return stamp
