"""Tracing and logging for every process of the mesh, configured by the standard `OTEL_*` variables.

One call, `setup_telemetry`, installs the tracer provider and the JSON log format. gRPC spans come
from the OpenTelemetry interceptors that `services.common.server` and `services.common.channels`
install; Kafka code carries the trace context in message headers with the helpers below.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_NAMESPACE, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)

from services.common.config import CommonSettings

_provider: TracerProvider | None = None


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the active trace and span ids for log-trace correlation."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        extra_fields = getattr(record, "fields", None)
        if isinstance(extra_fields, dict):
            entry.update(extra_fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(settings: CommonSettings, service: str) -> None:
    """Send the root logger to stderr as JSON (or text for humans), replacing earlier handlers."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonLogFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # aiokafka and grpc are chatty at INFO about routine reconnects.
    for noisy in ("aiokafka", "kafka", "grpc._cython"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _exporter_from_settings(settings: CommonSettings) -> SpanExporter | None:
    kind = settings.otel_traces_exporter
    if kind is None:
        kind = "otlp" if settings.otel_exporter_otlp_endpoint else "none"
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint, insecure=True)


def setup_telemetry(
    settings: CommonSettings,
    service: str,
    *,
    exporters: Sequence[SpanExporter] = (),
) -> TracerProvider:
    """Install logging and the process-wide tracer provider once; later calls add exporters.

    `exporters` lets tests attach an in-memory exporter; production uses `OTEL_TRACES_EXPORTER`.
    """
    global _provider  # noqa: PLW0603 - OpenTelemetry's provider is process-global by design
    setup_logging(settings, service)
    if _provider is None:
        resource = Resource.create(
            {
                SERVICE_NAME: settings.otel_service_name or f"counterpick-{service}",
                SERVICE_NAMESPACE: "counterpick",
            }
        )
        _provider = TracerProvider(resource=resource)
        configured = _exporter_from_settings(settings)
        if configured is not None:
            _provider.add_span_processor(BatchSpanProcessor(configured))
        trace.set_tracer_provider(_provider)
        _instrument_store_clients()
    for exporter in exporters:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def _instrument_store_clients() -> None:
    """Spans for every PostgreSQL and Redis command, children of the RPC span that issued them."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument()


def shutdown_telemetry() -> None:
    """Flush spans still buffered; call before the process exits."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=3000)
        _provider.shutdown()


KafkaHeaders = list[tuple[str, bytes]]


def inject_kafka_headers(headers: KafkaHeaders | None = None) -> KafkaHeaders:
    """Return Kafka message headers carrying the current trace context (W3C traceparent)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    out = list(headers or [])
    out.extend((key, value.encode()) for key, value in carrier.items())
    return out


def extract_kafka_context(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    """Rebuild the producer's trace context from Kafka headers, so consumer spans join its trace."""
    carrier = {key: value.decode("latin-1") for key, value in headers or ()}
    return propagate.extract(carrier)
