"""Interoperability with the OpenTelemetry SDK (1.45): its W3C propagator and our parser
agree on ``traceparent`` in both directions, and a span context crosses intact."""

from __future__ import annotations

import random

import opentelemetry.trace as otel_trace
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from faultline.tracing import TraceContext, parse_traceparent

PROPAGATOR = TraceContextTextMapPropagator()


def sdk_headers(sampled: bool = True) -> tuple[dict[str, str], otel_trace.SpanContext]:
    """The headers the SDK injects inside one of its spans, and that span's context."""
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON

    provider = TracerProvider(sampler=ALWAYS_ON if sampled else ALWAYS_OFF)
    tracer = provider.get_tracer("faultline-interop-test")
    carrier: dict[str, str] = {}
    with tracer.start_as_current_span("checkout") as span:
        PROPAGATOR.inject(carrier)
        context = span.get_span_context()
    provider.shutdown()
    return carrier, context


def test_the_sdk_sends_flags_03_and_we_read_them_as_sampled() -> None:
    carrier, context = sdk_headers()
    header = carrier["traceparent"]
    assert header.endswith("-03")  # sampled + the level-2 "random" bit: never expect -01
    parsed = parse_traceparent(header)
    assert parsed == TraceContext(f"{context.trace_id:032x}", f"{context.span_id:016x}", True)


def test_an_unsampled_sdk_span_parses_as_unsampled() -> None:
    carrier, context = sdk_headers(sampled=False)
    parsed = parse_traceparent(carrier["traceparent"])
    assert parsed is not None and parsed.sampled is False
    assert parsed.trace_id == f"{context.trace_id:032x}"


@pytest.mark.parametrize("sampled", [True, False])
def test_the_sdk_extracts_our_traceparent(sampled: bool) -> None:
    ours = TraceContext.new_root(random.Random(11), sampled=sampled).child(random.Random(12))
    extracted = PROPAGATOR.extract({"traceparent": ours.to_traceparent()})
    theirs = otel_trace.get_current_span(extracted).get_span_context()
    assert theirs.is_valid and theirs.is_remote
    assert f"{theirs.trace_id:032x}" == ours.trace_id
    assert f"{theirs.span_id:016x}" == ours.span_id
    assert theirs.trace_flags.sampled is sampled


def test_a_trace_crosses_sdk_ours_sdk_with_one_trace_id() -> None:
    carrier, context = sdk_headers()
    incoming = parse_traceparent(carrier["traceparent"])
    outgoing = incoming.child(random.Random(3))
    provider = TracerProvider()
    tracer = provider.get_tracer("downstream")
    parent = PROPAGATOR.extract({"traceparent": outgoing.to_traceparent()})
    with tracer.start_as_current_span("charge", context=parent) as span:
        downstream = span.get_span_context()
        parent_id = span.parent.span_id
    provider.shutdown()
    assert downstream.trace_id == context.trace_id
    assert f"{parent_id:016x}" == outgoing.span_id


@pytest.mark.parametrize("header", [
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
])
def test_we_and_the_sdk_reject_the_same_invalid_headers(header: str) -> None:
    assert parse_traceparent(header) is None
    extracted = PROPAGATOR.extract({"traceparent": header})
    assert not otel_trace.get_current_span(extracted).get_span_context().is_valid
