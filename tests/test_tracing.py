"""Tracing: W3C traceparent parsing, trace contexts, middlewares on real and simulated hops,
self time and the bottleneck, OTLP JSON export, the waterfall plot."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

import faultline as fl
from faultline.errors import UpstreamError
from faultline.retry import RetryPolicy
from faultline.tracing import (
    Span,
    SpanCollector,
    TraceContext,
    bottleneck,
    current_trace,
    format_trace,
    parse_traceparent,
    propagate_trace,
    run_chain,
    self_times,
    trace_shop,
    trace_tree,
    tracing_middleware,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"

# --- parse_traceparent: W3C Trace Context level 1 ------------------------------------------

ACCEPTED = [
    (VALID, True),
    (f"00-{TRACE}-{SPAN}-00", False),
    (f"00-{TRACE}-{SPAN}-03", True),  # OpenTelemetry SDK 1.45: sampled + random
    (f"00-{TRACE}-{SPAN}-02", False),  # the random bit alone is not "sampled"
    (f"00-{TRACE}-{SPAN}-ff", True),
    (f"00-{TRACE}-{SPAN}-fe", False),
    (f"  {VALID}\t", True),  # optional white space around the value
    (f"\t \t{VALID}", True),
    (f"01-{TRACE}-{SPAN}-01", True),  # a future version...
    (f"cc-{TRACE}-{SPAN}-01-what-the-future-will-be-like", True),  # ...may carry more
    (f"fe-{TRACE}-{SPAN}-00-", False),
    (f"00-{'0' * 31}1-{'0' * 15}1-01", True),
]

REJECTED = [
    ("", "empty"),
    ("00", "one field"),
    (f"00-{TRACE}-{SPAN}", "three fields"),
    (f"00-{TRACE.upper()}-{SPAN}-01", "upper-case trace id"),
    (f"00-{TRACE}-{SPAN.upper()}-01", "upper-case parent id"),
    (f"00-{TRACE}-{SPAN}-0A", "upper-case flags"),
    (f"0A-{TRACE}-{SPAN}-01", "upper-case version"),
    (f"00-{'0' * 32}-{SPAN}-01", "all-zero trace id"),
    (f"00-{TRACE}-{'0' * 16}-01", "all-zero parent id"),
    (f"ff-{TRACE}-{SPAN}-01", "version ff"),
    (f"00-{TRACE}-{SPAN}-01-extra", "version 00 with a fifth field"),
    (f"00-{TRACE}-{SPAN}-01-", "version 00 with a trailing dash"),
    (f"00-{TRACE}-{SPAN}-01x", "version 00 with trailing characters"),
    (f"cc-{TRACE}-{SPAN}-01what", "future version, no dash after the flags"),
    (f"00-{TRACE[:-1]}-{SPAN}-01", "31-digit trace id"),
    (f"00-{TRACE}0-{SPAN}-01", "33-digit trace id"),
    (f"00-{TRACE}-{SPAN[:-1]}-01", "15-digit parent id"),
    (f"00-{TRACE}-{SPAN}0-01", "17-digit parent id"),
    (f"00-{TRACE}-{SPAN}-1", "one-digit flags"),
    (f"00-{TRACE}-{SPAN}-001", "three-digit flags"),
    (f"0-{TRACE}-{SPAN}-01", "one-digit version"),
    (f"000-{TRACE}-{SPAN}-01", "three-digit version"),
    (f"00-{TRACE[:-1]}g-{SPAN}-01", "non-hex trace id"),
    (f"00-{TRACE}-{SPAN[:-1]}z-01", "non-hex parent id"),
    (f"00-{TRACE}-{SPAN}-0g", "non-hex flags"),
    (f"00_{TRACE}_{SPAN}_01", "wrong separator"),
    (f"00-{TRACE}-{SPAN}-01\n", "a trailing newline (only spaces and tabs are OWS)"),
    (f"00-{TRACE[:16]}-{TRACE[16:]}-{SPAN}-01", "a dash inside the trace id"),
    (f"00-{TRACE}-{SPAN}-\uff10\uff11", "full-width digits"),
    (None, "None"),
    (42, "not a string"),
    (VALID.encode(), "bytes"),
]


@pytest.mark.parametrize(("header", "sampled"), ACCEPTED, ids=[h for h, _ in ACCEPTED])
def test_parse_traceparent_accepts_valid_headers(header: str, sampled: bool) -> None:
    parsed = parse_traceparent(header)
    assert parsed is not None
    assert parsed.sampled is sampled
    stripped = header.strip(" \t")
    assert (parsed.trace_id, parsed.span_id) == (stripped[3:35], stripped[36:52])


@pytest.mark.parametrize(("header", "why"), REJECTED, ids=[why for _, why in REJECTED])
def test_parse_traceparent_rejects_invalid_headers(header: object, why: str) -> None:
    assert parse_traceparent(header) is None, why


def test_parse_traceparent_round_trips_to_traceparent() -> None:
    assert parse_traceparent(VALID).to_traceparent() == VALID
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-03").to_traceparent() == VALID
    assert parse_traceparent(f"cc-{TRACE}-{SPAN}-00-x").to_traceparent() == \
        f"00-{TRACE}-{SPAN}-00"


# --- TraceContext --------------------------------------------------------------------------

def test_trace_context_has_value_equality() -> None:
    assert TraceContext(TRACE, SPAN, True) == TraceContext(TRACE, SPAN, True)
    assert TraceContext(TRACE, SPAN, True) != TraceContext(TRACE, SPAN, False)
    assert hash(TraceContext(TRACE, SPAN)) == hash(TraceContext(TRACE, SPAN, True))


@pytest.mark.parametrize(("args", "error"), [
    ((TRACE.upper(), SPAN, True), ValueError),
    ((TRACE, SPAN.upper(), True), ValueError),
    (("0" * 32, SPAN, True), ValueError),
    ((TRACE, "0" * 16, True), ValueError),
    ((TRACE[:-1], SPAN, True), ValueError),
    ((TRACE, SPAN + "0", True), ValueError),
    ((TRACE, SPAN, 1), TypeError),
    ((int(TRACE, 16), SPAN, True), TypeError),
])
def test_trace_context_refuses_bad_ids(args: tuple, error: type[Exception]) -> None:
    with pytest.raises(error):
        TraceContext(*args)


def test_to_traceparent_writes_version_00_and_the_sampled_flag() -> None:
    assert TraceContext(TRACE, SPAN, True).to_traceparent() == VALID
    assert TraceContext(TRACE, SPAN, False).to_traceparent() == f"00-{TRACE}-{SPAN}-00"


def test_new_root_draws_ids_from_the_rng(rng: random.Random) -> None:
    root = TraceContext.new_root(random.Random(7))
    assert root == TraceContext.new_root(random.Random(7))
    assert root.sampled is True
    assert len(root.trace_id) == 32 and len(root.span_id) == 16
    assert TraceContext.new_root(rng, sampled=False).sampled is False


def test_new_root_never_draws_an_all_zero_id() -> None:
    class Zeros(random.Random):
        calls = 0

        def getrandbits(self, k: int) -> int:
            self.calls += 1
            return 0 if self.calls <= 2 else 5

    root = TraceContext.new_root(Zeros())
    assert root.trace_id == "0" * 31 + "5" and root.span_id == "0" * 15 + "5"


def test_child_keeps_trace_and_sampling_with_a_new_span_id(rng: random.Random) -> None:
    for sampled in (True, False):
        parent = TraceContext.new_root(rng, sampled=sampled)
        child = parent.child(rng)
        assert child.trace_id == parent.trace_id
        assert child.sampled is sampled
        assert child.span_id != parent.span_id


# --- bottleneck and self time ---------------------------------------------------------------

def span(service: str, start: float, end: float, span_id: str, parent: str | None = None,
         name: str = "op") -> Span:
    return Span(TRACE, span_id.rjust(16, "0"), parent.rjust(16, "0") if parent else None,
                service, name, start, end)


def test_bottleneck_is_the_service_doing_its_own_work() -> None:
    spans = [span("orders", 0, 10, "1"), span("payments", 1, 3, "2", "1")]
    assert self_times(spans) == {"orders": 8, "payments": 2}
    assert bottleneck(spans) == "orders"


def test_bottleneck_looks_through_a_waiting_parent_to_the_slow_downstream() -> None:
    spans = [span("gateway", 0, 10, "1"), span("orders", 1, 9, "2", "1"),
             span("payments", 2, 8.5, "3", "2")]
    assert self_times(spans) == {"gateway": 2, "orders": 1.5, "payments": 6.5}
    assert bottleneck(spans) == "payments"


def test_bottleneck_counts_overlapping_children_once() -> None:
    # orders calls inventory and payments in parallel: it waits 9 s, not 17.
    spans = [span("orders", 0, 20, "1"), span("inventory", 0, 9, "2", "1"),
             span("payments", 1, 9, "3", "1")]
    assert self_times(spans)["orders"] == 11
    assert bottleneck(spans) == "orders"


def test_bottleneck_clips_children_to_their_parent() -> None:
    spans = [span("orders", 0, 10, "1"), span("inventory", 0, 2, "2", "1"),
             span("email", 8, 13, "3", "1")]  # fire-and-forget: outlives its parent
    assert self_times(spans) == {"orders": 6, "inventory": 2, "email": 5}
    assert bottleneck(spans) == "orders"


def test_bottleneck_sums_self_time_per_service() -> None:
    spans = [span("orders", 0, 12, "1"), span("payments", 0, 3, "2", "1"),
             span("payments", 3, 6, "3", "1"), span("email", 6, 11, "4", "1")]
    assert self_times(spans) == {"orders": 1, "payments": 6, "email": 5}
    assert bottleneck(spans) == "payments"


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)])
def test_bottleneck_breaks_ties_by_name(order: tuple[int, int, int]) -> None:
    spans = [span("orders", 0, 4, "1"), span("payments", 1, 2, "2", "1"),
             span("inventory", 2, 4, "3", "1")]
    assert self_times(spans) == {"orders": 1, "payments": 1, "inventory": 2}
    spans = [span("orders", 0, 6, "1"), span("payments", 0, 2, "2", "1"),
             span("inventory", 4, 6, "3", "1")]
    assert bottleneck([spans[i] for i in order]) == "inventory"  # 2 s each: i < o < p


def test_bottleneck_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="spans"):
        bottleneck([])


def test_bottleneck_refuses_spans_of_several_traces() -> None:
    other = Span("1" * 32, "1" * 16, None, "email", "op", 0, 1)
    with pytest.raises(ValueError, match="one trace"):
        bottleneck([span("orders", 0, 1, "1"), other])


def test_trace_tree_orders_children_after_parents_by_start() -> None:
    spans = [span("email", 6, 11, "4", "1"), span("payments", 0, 3, "2", "1"),
             span("orders", 0, 12, "1"), span("bank", 1, 2, "5", "2")]
    assert [(d, s.service) for d, s in trace_tree(spans)] == [
        (0, "orders"), (1, "payments"), (2, "bank"), (1, "email")]


# --- the middleware over real sockets -------------------------------------------------------

@pytest.mark.realtime
async def test_three_real_hops_keep_one_trace_with_parent_links() -> None:
    collector = SpanCollector()
    spans = await run_chain(tracing_middleware, collector, hops=3)
    by_service = {s.service: s for s in spans}
    assert sorted(by_service) == ["a", "b", "c"]
    a, b, c = by_service["a"], by_service["b"], by_service["c"]
    assert len({s.trace_id for s in spans}) == 1
    assert (a.parent_id, b.parent_id, c.parent_id) == (None, a.span_id, b.span_id)
    assert len({s.span_id for s in spans}) == 3
    assert a.start <= b.start <= c.start <= c.end <= b.end <= a.end
    assert {s.name for s in spans} == {"GET /hop"}
    assert {s.status for s in spans} == {200}


@pytest.mark.realtime
async def test_the_chain_continues_an_incoming_trace() -> None:
    spans = await run_chain(tracing_middleware, SpanCollector(), traceparent=f"  {VALID}")
    assert {s.trace_id for s in spans} == {TRACE}
    assert {s.service: s.parent_id for s in spans}["a"] == SPAN


@pytest.mark.realtime
async def test_the_chain_restarts_after_an_invalid_traceparent() -> None:
    header = f"00-{TRACE.upper()}-{SPAN}-01"
    spans = await run_chain(tracing_middleware, SpanCollector(), hops=2, traceparent=header)
    assert len({s.trace_id for s in spans}) == 1 and spans[0].trace_id != TRACE
    assert {s.service: s.parent_id for s in spans}["a"] is None


@pytest.mark.realtime
async def test_an_unsampled_trace_records_nothing() -> None:
    collector = SpanCollector()
    spans = await run_chain(tracing_middleware, collector, traceparent=f"00-{TRACE}-{SPAN}-00")
    assert spans == [] and len(collector) == 0


@pytest.mark.realtime
async def test_the_middleware_restores_the_context_and_records_errors() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    async def boom(request: web.Request) -> web.Response:
        assert current_trace.get() is not None
        raise web.HTTPServiceUnavailable()

    collector = SpanCollector()
    app = web.Application(middlewares=[tracing_middleware("svc", collector)])
    app.router.add_get("/boom", boom)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/boom")
        assert answer.status == 503
    assert [s.status for s in collector.spans] == [503]
    assert current_trace.get() is None


async def test_propagate_trace_adds_traceparent_only_inside_a_trace() -> None:
    seen = []

    async def send(request: fl.Request) -> fl.Response:
        seen.append(request.header("traceparent"))
        return fl.Response(200)

    await propagate_trace(send, fl.Request("GET", "/"))
    token = current_trace.set(TraceContext(TRACE, SPAN, False))
    try:
        await propagate_trace(send, fl.Request("GET", "/"))
    finally:
        current_trace.reset(token)
    assert seen == [None, f"00-{TRACE}-{SPAN}-00"]


def test_run_chain_checks_hops() -> None:
    with pytest.raises(ValueError, match="hops"):
        asyncio.run(run_chain(tracing_middleware, SpanCollector(), hops=0))


# --- the traced SimShop ---------------------------------------------------------------------

CHECKOUT_TREE = [
    (0, "gateway", "server", "POST /checkout"),
    (1, "gateway", "client", "call orders POST /orders"),
    (2, "orders", "server", "POST /orders"),
    (3, "orders", "client", "call inventory POST /reserve"),
    (4, "inventory", "server", "POST /reserve"),
    (3, "orders", "client", "call payments POST /charge"),
    (4, "payments", "server", "POST /charge"),
    (3, "orders", "client", "call email POST /send"),
    (4, "email", "server", "POST /send"),
]


def tree_of(spans: list[Span]) -> list[tuple[int, str, str, str]]:
    return [(d, s.service, s.kind, s.name) for d, s in trace_tree(spans)]


async def test_a_traced_checkout_gives_the_expected_tree() -> None:
    shop = fl.SimShop(seed=3)
    collector = SpanCollector(wall_offset=0)
    trace_shop(shop, collector, rng=random.Random(1))
    answer = await shop.route("checkout")()
    assert answer.status == 201
    (trace,) = collector.traces().values()
    assert tree_of(trace) == CHECKOUT_TREE
    ids = {s.span_id: s for s in trace}
    for s in trace:
        if s.parent_id is not None:
            parent = ids[s.parent_id]
            assert parent.start <= s.start <= s.end <= parent.end
    # the network delay (0.5 ms each way) is the client spans' own time
    assert self_times(trace)["gateway"] >= 0.001


async def test_trace_shop_twice_replaces_the_earlier_tracing() -> None:
    shop = fl.SimShop(seed=3)
    collector = SpanCollector(wall_offset=0)
    trace_shop(shop, SpanCollector())
    trace_shop(shop, collector, rng=random.Random(1))
    await shop.route("checkout")()
    assert len(collector) == len(CHECKOUT_TREE)
    assert all(len(shop.service(n).middlewares) == 1 for n in shop.services)


async def test_every_retry_is_its_own_client_span() -> None:
    shop = fl.SimShop(seed=3)
    collector = SpanCollector(wall_offset=0)
    trace_shop(shop, collector, rng=random.Random(1))
    shop.faults.inject("payments", fl.ErrorRate(1.0, status=503))
    policy = RetryPolicy(max_attempts=3, base=0.01, jitter="none", retry_on=UpstreamError)
    shop.client("orders").use("payments", lambda send, req: policy.call(send, req))
    answer = await shop.route("checkout")()
    assert answer.status == 503
    (trace,) = collector.traces().values()
    attempts = [s for s in trace if s.kind == "client" and "payments" in s.name]
    assert [s.status for s in attempts] == [503, 503, 503]
    servers = [s for s in trace if s.service == "payments"]
    assert sorted(s.parent_id for s in servers) == sorted(s.span_id for s in attempts)
    assert [s.name for s in trace if s.service == "email"] == []


async def test_a_slow_downstream_is_the_bottleneck_and_local_work_is_not() -> None:
    async def one_checkout(setup) -> str:
        shop = fl.SimShop(seed=5)
        collector = SpanCollector(wall_offset=0)
        trace_shop(shop, collector, rng=random.Random(2))
        setup(shop)
        await shop.route("checkout")()
        (trace,) = collector.traces().values()
        return bottleneck(trace)

    assert await one_checkout(lambda shop: shop.faults.inject("inventory", fl.Latency(0.4))) \
        == "inventory"
    assert await one_checkout(lambda shop: setattr(shop.service("orders"), "work",
                                                   fl.Work(0.4, 0))) == "orders"


async def test_head_sampling_keeps_whole_traces_at_the_rate() -> None:
    shop = fl.SimShop(seed=3)
    collector = SpanCollector(wall_offset=0)
    trace_shop(shop, collector, rng=random.Random(4), sample_rate=0.25)
    send = shop.route("checkout")
    for _ in range(200):
        await send()
    traces = collector.traces()
    assert 30 <= len(traces) <= 70
    assert all(tree_of(t) == CHECKOUT_TREE for t in traces.values())


def test_sample_rate_must_be_a_fraction() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        trace_shop(fl.SimShop(), SpanCollector(), sample_rate=1.5)


def test_format_trace_prints_an_indented_tree() -> None:
    spans = [span("orders", 0, 0.01, "1", name="POST /orders"),
             span("payments", 0.002, 0.006, "2", "1", name="POST /charge")]
    lines = format_trace(spans).splitlines()
    assert lines[0].startswith("orders POST /orders")
    assert lines[1].startswith("  payments POST /charge")
    assert "self    6.0 ms" in lines[0]
    assert format_trace([]) == "(no spans)"


# --- OTLP JSON ------------------------------------------------------------------------------

def test_spans_export_as_otlp_json() -> None:
    collector = SpanCollector(wall_offset=1_700_000_000.0)
    collector.record(Span(TRACE, SPAN, None, "gateway", "POST /checkout", 1.5, 1.75,
                          status=201))
    collector.record(Span(TRACE, "1" * 16, SPAN, "orders", "call payments POST /charge",
                          1.5, 1.625, kind="client", status=503))
    data = json.loads(collector.to_otlp_json())
    resources = data["resourceSpans"]
    assert [r["resource"]["attributes"] for r in resources] == [
        [{"key": "service.name", "value": {"stringValue": "gateway"}}],
        [{"key": "service.name", "value": {"stringValue": "orders"}}]]
    root = resources[0]["scopeSpans"][0]["spans"][0]
    assert root["traceId"] == TRACE and root["spanId"] == SPAN
    assert "parentSpanId" not in root
    assert root["kind"] == 2
    assert root["startTimeUnixNano"] == "1700000001500000000"
    assert root["endTimeUnixNano"] == "1700000001750000000"
    assert {"key": "http.response.status_code", "value": {"intValue": "201"}} in \
        root["attributes"]
    assert root["status"] == {}
    client = resources[1]["scopeSpans"][0]["spans"][0]
    assert client["parentSpanId"] == SPAN and client["kind"] == 3
    assert client["status"] == {"code": 2}
    assert resources[1]["scopeSpans"][0]["scope"]["name"] == "faultline.tracing"


async def test_wall_offset_is_measured_at_the_first_record() -> None:
    collector = SpanCollector()
    collector.record(span("orders", 0, 1, "1"))
    assert collector.wall_offset > 1_000_000_000  # loop time 0 is now, in Unix time


# --- the waterfall --------------------------------------------------------------------------

def test_waterfall_draws_a_bar_per_span_with_self_time_shaded() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from faultline.viz import waterfall

    spans = [span("orders", 0, 0.012, "1", name="POST /orders"),
             span("payments", 0.002, 0.006, "2", "1", name="POST /charge"),
             span("email", 0.006, 0.011, "3", "1", name="POST /send")]
    ax = waterfall(spans, title="one checkout")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["orders  POST /orders", "  payments  POST /charge",
                      "  email  POST /send"]
    client = [span("orders", 0, 0.012, "1", name="POST /orders"),
              Span(TRACE, "2" * 16, "1".rjust(16, "0"), "orders", "call email POST /send",
                   0.001, 0.01, kind="client", status=503)]
    ax2 = waterfall(client)
    assert [t.get_text() for t in ax2.get_yticklabels()][1] == "  call email POST /send"
    assert any("503" in t.get_text() for t in ax2.texts)
    plt.close(ax2.figure)
    assert ax.get_title(loc="left").startswith("one checkout")
    assert ax.get_xlabel() == "time since the trace started (ms)"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="spans"):
        waterfall([])
