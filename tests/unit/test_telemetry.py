"""Logs carry the trace they were written in, so a log line leads to its trace."""

from __future__ import annotations

import json
import logging

from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.telemetry import JsonLogFormatter


def _record(message: str, **fields: object) -> logging.LogRecord:
    record = logging.LogRecord("svc", logging.INFO, __file__, 1, message, None, None)
    if fields:
        record.fields = fields
    return record


def test_json_log_line_has_trace_and_span_ids_inside_a_span(
    span_exporter: InMemorySpanExporter,
) -> None:
    formatter = JsonLogFormatter("draft")
    with trace.get_tracer("test").start_as_current_span("rpc") as span:
        line = json.loads(formatter.format(_record("picked", hero_id=14)))
    context = span.get_span_context()
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    assert (line["service"], line["msg"], line["hero_id"], line["level"]) == (
        "draft",
        "picked",
        14,
        "INFO",
    )


def test_json_log_line_outside_a_span_has_no_trace_fields() -> None:
    line = json.loads(JsonLogFormatter("draft").format(_record("idle")))
    assert "trace_id" not in line
