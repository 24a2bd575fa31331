"""Kafka messages carry the producer's trace; the consumer's span continues it (real tansu)."""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.common.stores import ensure_kafka_topics
from services.common.telemetry import extract_kafka_context, inject_kafka_headers


async def test_trace_context_crosses_kafka(
    kafka_bootstrap: str, span_exporter: InMemorySpanExporter
) -> None:
    topic = f"trace-{uuid.uuid4().hex[:8]}"
    await ensure_kafka_topics(kafka_bootstrap, {topic: 1})
    tracer = trace.get_tracer("test")
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        with tracer.start_as_current_span("publish match ref") as producer_span:
            await producer.send_and_wait(topic, b"match", headers=inject_kafka_headers())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        record = await consumer.getone()
    finally:
        await consumer.stop()
    with tracer.start_as_current_span(
        "consume match ref", context=extract_kafka_context(record.headers)
    ) as consumer_span:
        pass

    producer_context = producer_span.get_span_context()
    consumer_context = consumer_span.get_span_context()
    assert consumer_context.trace_id == producer_context.trace_id
    finished = {span.name: span for span in span_exporter.get_finished_spans()}
    consumer_parent = finished["consume match ref"].parent
    assert consumer_parent is not None
    assert consumer_parent.span_id == producer_context.span_id


def test_headers_without_trace_start_a_fresh_trace() -> None:
    context = extract_kafka_context([("unrelated", b"x")])
    assert not trace.get_current_span(context).get_span_context().is_valid
