"""The sidecar proxy: its sans-I/O core on a fake clock, then the proxy on real sockets."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from faultline.clock import FakeClock
from faultline.faults import ConnectionReset, Hang, Script
from faultline.live import LiveShop
from faultline.meshcheck import Upstream, closed_url, fetch, serve
from faultline.mtls import CertificateAuthority, client_ssl_context, server_ssl_context
from faultline.policy import SidecarPolicy
from faultline.retry import RetryAfter, backoff_delay
from faultline.sidecar import (
    ATTEMPT_COUNT_HEADER,
    Admitted,
    AttemptResult,
    Finish,
    Refused,
    RunningSidecar,
    SidecarCore,
    SidecarMetrics,
    make_sidecar,
    sidecar_metrics,
    start_sidecar,
)
from faultline.tracing import SpanCollector, TraceContext

# Backoff small enough that real-time tests stay fast, large enough to be real sleeps.
FAST = {"backoff_base": 0.001, "backoff_cap": 0.004}


def answered(status: int) -> AttemptResult:
    return AttemptResult(status=status)


# --- the core, sans I/O --------------------------------------------------------------------

def test_get_is_retried_on_503_with_full_jitter_backoff_from_the_rng():
    policy = SidecarPolicy(max_retries=2, backoff_base=0.1, backoff_cap=1.0,
                           retry_budget_ratio=None)
    core = SidecarCore(policy, rng=random.Random(7))
    expected = random.Random(7)
    attempts = core.attempts("get")
    assert attempts.begin() == 1
    assert attempts.after(answered(503)) == RetryAfter(
        backoff_delay(0, base=0.1, cap=1.0, jitter="full", rng=expected))
    assert attempts.begin() == 2
    assert attempts.after(answered(503)) == RetryAfter(
        backoff_delay(1, base=0.1, cap=1.0, jitter="full", rng=expected))
    assert attempts.begin() == 3
    assert attempts.after(answered(503)) == Finish("attempts exhausted")
    assert (core.metrics.attempts, core.metrics.retries) == (3, 2)


@pytest.mark.parametrize("result", [AttemptResult(error="connect"), AttemptResult(error="reset"),
                                    AttemptResult(error="timeout"), answered(502),
                                    answered(504)])
def test_connection_errors_timeouts_and_retryable_statuses_are_retried(result):
    attempts = SidecarCore(SidecarPolicy(**FAST), rng=random.Random(1)).attempts("PUT")
    attempts.begin()
    assert isinstance(attempts.after(result), RetryAfter)


@pytest.mark.parametrize("status", [200, 201, 404, 500, 501])
def test_other_statuses_are_the_answer(status):
    attempts = SidecarCore(SidecarPolicy(), rng=random.Random(1)).attempts("GET")
    attempts.begin()
    assert attempts.after(answered(status)) == Finish("answered")


@pytest.mark.parametrize("method", ["POST", "PATCH", "CONNECT"])
def test_non_idempotent_methods_are_never_retried(method):
    core = SidecarCore(SidecarPolicy(), rng=random.Random(1))
    attempts = core.attempts(method)
    attempts.begin()
    assert attempts.after(AttemptResult(error="reset")) == Finish("not idempotent")
    assert (core.metrics.attempts, core.metrics.retries, core.metrics.connect_errors) == (1, 0, 1)


def test_the_budget_is_shared_by_all_requests_and_caps_retries():
    policy = SidecarPolicy(max_retries=5, retry_budget_ratio=0.0, retry_budget_min=2, **FAST)
    core = SidecarCore(policy, rng=random.Random(1))
    tries = []
    for _ in range(3):
        attempts = core.attempts("GET")
        while True:
            attempts.begin()
            if isinstance(attempts.after(answered(503)), Finish):
                break
        tries.append(attempts.count)
    assert tries == [3, 1, 1]  # two tokens, both spent by the first request
    assert (core.metrics.retries, core.metrics.retries_budget_exhausted) == (2, 3)


def test_every_request_deposits_in_the_budget_even_when_it_may_not_retry():
    core = SidecarCore(SidecarPolicy(retry_budget_ratio=0.5, retry_budget_min=0),
                       rng=random.Random(1))
    core.attempts("POST")
    core.attempts("POST")
    assert core.budget is not None and core.budget.balance == 1.0


def fail(core: SidecarCore, clock: FakeClock, *, failed: bool = True) -> None:
    admission = core.admit(clock())
    assert isinstance(admission, Admitted)
    core.finish(clock(), admission, failed=failed)


def test_breaker_closed_open_half_open_closed(fake_clock):
    core = SidecarCore(SidecarPolicy(breaker_consecutive_failures=3, breaker_open_seconds=5.0))
    fail(core, fake_clock)
    fail(core, fake_clock)
    fail(core, fake_clock, failed=False)  # a success breaks the run of failures
    fail(core, fake_clock)
    fail(core, fake_clock)
    assert core.breaker is not None and core.breaker.state == "closed"
    fake_clock.advance(1.0)
    fail(core, fake_clock)  # the third in a row
    assert core.breaker.state == "open"
    assert core.admit(fake_clock()) == Refused("breaker", 5.0)
    fake_clock.advance(2.0)
    assert core.admit(fake_clock()) == Refused("breaker", 3.0)
    fake_clock.advance(3.0)
    trial = core.admit(fake_clock())
    assert isinstance(trial, Admitted) and trial.breaker is not None and trial.breaker.trial
    assert core.admit(fake_clock()) == Refused("breaker", 0.0)  # one trial at a time
    core.finish(fake_clock(), trial, failed=False)
    assert core.breaker.state == "closed"
    assert core.metrics.breaker_rejections == 3
    assert core.metrics.requests == 10


def test_breaker_failed_trial_opens_it_for_a_full_period(fake_clock):
    core = SidecarCore(SidecarPolicy(breaker_consecutive_failures=1, breaker_open_seconds=2.0))
    fail(core, fake_clock)
    fake_clock.advance(2.0)
    fail(core, fake_clock)  # the trial fails
    assert core.admit(fake_clock()) == Refused("breaker", 2.0)


def test_cancelled_request_gives_back_its_trial_and_its_place(fake_clock):
    core = SidecarCore(SidecarPolicy(breaker_consecutive_failures=1, breaker_open_seconds=1.0,
                                     max_concurrent=1))
    fail(core, fake_clock)
    fake_clock.advance(1.0)
    trial = core.admit(fake_clock())
    assert isinstance(trial, Admitted) and core.in_flight == 1
    core.abandon(trial)
    assert core.in_flight == 0
    assert isinstance(core.admit(fake_clock()), Admitted)  # the trial is free again


def test_overflow_beyond_max_concurrent_and_no_breaker_trial_lost(fake_clock):
    core = SidecarCore(SidecarPolicy(max_concurrent=2, breaker_consecutive_failures=None))
    first, second = core.admit(0.0), core.admit(0.0)
    assert core.admit(0.0) == Refused("overflow")
    core.finish(0.0, first, failed=False)
    assert isinstance(core.admit(0.0), Admitted)
    assert isinstance(second, Admitted)
    assert (core.metrics.requests, core.metrics.overflow, core.in_flight) == (4, 1, 2)


def test_request_id_is_kept_or_made_from_the_rng():
    core = SidecarCore(rng=random.Random(3))
    assert core.request_id("abc-123") == "abc-123"
    made = core.request_id(None)
    assert made == str(uuid.UUID(int=random.Random(3).getrandbits(128), version=4))
    assert uuid.UUID(made).version == 4
    assert core.request_id("") != ""


def test_trace_is_continued_from_a_valid_traceparent_else_started():
    core = SidecarCore(rng=random.Random(3))
    parent = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", False)
    context, parent_id = core.trace(parent.to_traceparent())
    assert (context.trace_id, context.sampled, parent_id) == (parent.trace_id, False,
                                                               parent.span_id)
    assert context.span_id != parent.span_id
    for bad in (None, "garbage", "00-" + "0" * 32 + "-00f067aa0ba902b7-01"):
        fresh, none = core.trace(bad)
        assert none is None and fresh.trace_id != parent.trace_id


def test_metrics_as_dict_is_a_copy():
    metrics = SidecarMetrics(requests=2, responses={200: 2})
    data = metrics.as_dict()
    data["responses"][200] = 99
    assert metrics.responses == {200: 2}
    assert data["requests"] == 2 and set(data) == {
        "requests", "attempts", "retries", "retries_budget_exhausted", "timeouts",
        "breaker_rejections", "overflow", "connect_errors", "responses"}


@pytest.mark.parametrize("kwargs", [{"status": 200, "error": "reset"}, {},
                                    {"error": "gone"}])
def test_attempt_result_needs_exactly_one_known_outcome(kwargs):
    with pytest.raises(ValueError):
        AttemptResult(**kwargs)


@pytest.mark.parametrize(("url", "error"), [("ftp://127.0.0.1", ValueError),
                                            ("http://", ValueError),
                                            ("http://127.0.0.1/?q=1", ValueError),
                                            (b"http://127.0.0.1", TypeError)])
def test_make_sidecar_refuses_a_bad_upstream_url(url, error):
    with pytest.raises(error, match="upstream_url"):
        make_sidecar(url)


def test_make_sidecar_refuses_a_policy_of_the_wrong_type():
    with pytest.raises(TypeError, match="policy"):
        make_sidecar("http://127.0.0.1:1", {"timeout": 1})  # type: ignore[arg-type]


# --- the proxy on real sockets -------------------------------------------------------------

@asynccontextmanager
async def shop_behind(service: str, policy: SidecarPolicy, **options: object
                      ) -> AsyncIterator[tuple[LiveShop, RunningSidecar]]:
    """A live shop, and a sidecar in front of one of its services."""
    shop = await LiveShop(seed=1).start()
    try:
        async with await start_sidecar(shop.url(service), policy, rng=random.Random(0),
                                       **options) as sidecar:  # type: ignore[arg-type]
            yield shop, sidecar
    finally:
        await shop.stop()


@asynccontextmanager
async def upstream_behind(upstream: Upstream, policy: SidecarPolicy | None = None,
                          **options: object) -> AsyncIterator[RunningSidecar]:
    """A recording upstream (faultline.meshcheck), and a sidecar in front of it."""
    async with serve(upstream.app()) as url, \
            await start_sidecar(url, policy, rng=random.Random(0), **options) as sidecar:  # type: ignore[arg-type]
        yield sidecar


@pytest.mark.realtime
async def test_get_retried_on_503_until_it_succeeds():
    async with shop_behind("inventory", SidecarPolicy(**FAST)) as (shop, sidecar):
        shop.faults.inject("inventory", Script((503, 503, 200)))
        answer = await fetch(sidecar.url + "/products")
        assert answer.status == 200 and b"products" in answer.body
        assert shop.service("inventory").received == 3
        assert sidecar.metrics == SidecarMetrics(requests=1, attempts=3, retries=2,
                                                 responses={200: 1})


@pytest.mark.realtime
async def test_get_retried_after_a_connection_reset():
    async with shop_behind("inventory", SidecarPolicy(**FAST)) as (shop, sidecar):
        shop.faults.inject("inventory", Script((ConnectionReset(), 200)))
        answer = await fetch(sidecar.url + "/products")
        assert answer.status == 200
        assert shop.service("inventory").received == 2
        assert sidecar.metrics == SidecarMetrics(requests=1, attempts=2, retries=1,
                                                 connect_errors=1, responses={200: 1})


@pytest.mark.realtime
async def test_post_is_sent_exactly_once():
    async with shop_behind("inventory", SidecarPolicy(**FAST)) as (shop, sidecar):
        shop.faults.inject("inventory", Script((503, ConnectionReset(), 200)))
        body = json.dumps({"quantity": 2}).encode()
        first = await fetch(sidecar.url + "/reserve", "POST", data=body)
        second = await fetch(sidecar.url + "/reserve", "POST", data=body)
        third = await fetch(sidecar.url + "/reserve", "POST", data=body)
        assert (first.status, second.status, third.status) == (503, 502, 200)
        assert json.loads(third.body) == {"reserved": 2}
        assert shop.service("inventory").received == 3
        assert sidecar.metrics == SidecarMetrics(requests=3, attempts=3, connect_errors=1,
                                                 responses={503: 1, 502: 1, 200: 1})


@pytest.mark.realtime
async def test_hanging_upstream_is_answered_504_at_the_timeout():
    policy = SidecarPolicy(timeout=0.2, **FAST)
    async with shop_behind("inventory", policy) as (shop, sidecar):
        shop.faults.inject("inventory", Hang())
        answer = await fetch(sidecar.url + "/products")
        assert answer.status == 504
        assert "sidecar timeout" in json.loads(answer.body)["error"]
        assert 0.2 <= answer.seconds < 1.0
        assert shop.service("inventory").received == 1
        assert sidecar.metrics == SidecarMetrics(requests=1, attempts=1, timeouts=1,
                                                 responses={504: 1})


@pytest.mark.realtime
async def test_per_try_timeouts_are_retried_and_each_attempt_is_numbered():
    policy = SidecarPolicy(timeout=2.0, per_try_timeout=0.05, max_retries=2, **FAST)
    async with upstream_behind(Upstream(Hang()), policy) as sidecar:
        answer = await fetch(sidecar.url + "/slow")
        assert answer.status == 504
        assert 0.15 <= answer.seconds < 1.0  # three tries of 0.05 s, not the 2 s timeout
        assert json.loads(answer.body)["attempts"] == 3
        assert sidecar.metrics == SidecarMetrics(requests=1, attempts=3, retries=2, timeouts=1,
                                                 responses={504: 1})


@pytest.mark.realtime
async def test_attempt_count_header_goes_upstream_on_each_try():
    upstream = Upstream(Script((503, ConnectionReset(), 200)))
    async with upstream_behind(upstream, SidecarPolicy(**FAST)) as sidecar:
        answer = await fetch(sidecar.url + "/x")
        assert answer.status == 200
        assert [r.headers[ATTEMPT_COUNT_HEADER] for r in upstream.received] == ["1", "2", "3"]


@pytest.mark.realtime
async def test_breaker_opens_answers_503_without_calling_upstream_then_closes():
    clock = FakeClock()
    policy = SidecarPolicy(max_retries=0, breaker_consecutive_failures=3,
                           breaker_open_seconds=5.0)
    async with shop_behind("inventory", policy, clock=clock) as (shop, sidecar):
        shop.faults.inject("inventory", Script((500, 503, 502)))
        statuses = [(await fetch(sidecar.url + "/products")).status for _ in range(3)]
        assert statuses == [500, 503, 502] and sidecar.breaker_state == "open"
        clock.advance(1.0)
        refused = await fetch(sidecar.url + "/products")
        assert refused.status == 503
        assert refused.headers["x-sidecar-breaker"] == "open"
        assert refused.headers["retry-after"] == "4"
        assert json.loads(refused.body)["retry_after"] == 4.0
        assert shop.service("inventory").received == 3  # upstream not called
        clock.advance(4.0)
        trial = await fetch(sidecar.url + "/products")  # the script is over: it works
        assert trial.status == 200 and sidecar.breaker_state == "closed"
        assert shop.service("inventory").received == 4
        assert sidecar.metrics == SidecarMetrics(
            requests=5, attempts=4, breaker_rejections=1,
            responses={500: 1, 503: 2, 502: 1, 200: 1})


@pytest.mark.realtime
async def test_connection_refused_counts_as_a_failure_for_the_breaker():
    policy = SidecarPolicy(max_retries=1, breaker_consecutive_failures=1, **FAST)
    async with await start_sidecar(closed_url(), policy, rng=random.Random(0)) as sidecar:
        first = await fetch(sidecar.url + "/")
        second = await fetch(sidecar.url + "/")
        assert (first.status, second.status) == (502, 503)
        assert "ClientConnectorError" in json.loads(first.body)["error"]
        assert sidecar.metrics == SidecarMetrics(requests=2, attempts=2, retries=1,
                                                 connect_errors=2, breaker_rejections=1,
                                                 responses={502: 1, 503: 1})


@pytest.mark.realtime
async def test_the_budget_caps_retries_across_requests():
    policy = SidecarPolicy(max_retries=3, retry_budget_ratio=0.0, retry_budget_min=1,
                           breaker_consecutive_failures=None, **FAST)
    async with shop_behind("inventory", policy) as (shop, sidecar):
        shop.faults.inject("inventory", Script((503,) * 10))
        statuses = [(await fetch(sidecar.url + "/products")).status for _ in range(2)]
        assert statuses == [503, 503]
        assert shop.service("inventory").received == 3  # 2 tries, then 1: one token only
        assert sidecar.metrics == SidecarMetrics(requests=2, attempts=3, retries=1,
                                                 retries_budget_exhausted=2,
                                                 responses={503: 2})


class Gate:
    """An upstream that holds every request until released, and says when one arrived."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.arrived.set()
            await self.release.wait()
            return web.Response(text="done")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.mark.realtime
async def test_requests_beyond_max_concurrent_are_refused_at_once():
    gate = Gate()
    async with serve(gate.app()) as url, \
            await start_sidecar(url, SidecarPolicy(max_concurrent=1)) as sidecar:
        held = asyncio.create_task(fetch(sidecar.url + "/a"))
        await gate.arrived.wait()
        refused = await fetch(sidecar.url + "/b")
        assert refused.status == 503 and refused.headers["x-sidecar-overloaded"] == "true"
        assert refused.seconds < 0.5
        gate.release.set()
        assert (await held).status == 200
        assert sidecar.metrics == SidecarMetrics(requests=2, attempts=1, overflow=1,
                                                 responses={503: 1, 200: 1})


@pytest.mark.realtime
async def test_request_id_is_kept_or_added_on_both_sides():
    upstream = Upstream()
    async with upstream_behind(upstream) as sidecar:
        kept = await fetch(sidecar.url + "/", headers={"X-Request-Id": "req-42"})
        added = await fetch(sidecar.url + "/")
    replay = SidecarCore(rng=random.Random(0))  # the same draws as the sidecar's: id, trace
    replay.trace(None)
    expected = replay.request_id(None)
    assert kept.headers["x-request-id"] == "req-42"
    assert upstream.received[0].headers.getall("x-request-id") == ["req-42"]
    assert added.headers["x-request-id"] == expected
    assert upstream.received[1].headers["x-request-id"] == expected


@pytest.mark.realtime
async def test_traceparent_continues_the_trace_with_the_sidecar_as_parent():
    upstream, collector = Upstream(), SpanCollector()
    incoming = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    async with upstream_behind(upstream, collector=collector, name="edge") as sidecar:
        await fetch(sidecar.url + "/t", headers={"traceparent": incoming.to_traceparent()})
        await fetch(sidecar.url + "/t", headers={"traceparent": "00-nonsense"})
    continued = upstream.received[0].headers["traceparent"]
    _, trace_id, parent_id, flags = continued.split("-")
    assert (trace_id, flags) == (incoming.trace_id, "01")
    assert parent_id != incoming.span_id
    first, second = collector.spans
    assert (first.trace_id, first.span_id, first.parent_id) == (trace_id, parent_id,
                                                                incoming.span_id)
    assert (first.service, first.name, first.status) == ("edge", "GET /t", 200)
    started = upstream.received[1].headers["traceparent"].split("-")
    assert started[1] != incoming.trace_id and second.parent_id is None
    assert (second.trace_id, second.span_id) == (started[1], started[2])


@pytest.mark.realtime
async def test_method_path_query_headers_and_body_are_forwarded_both_ways():
    upstream = Upstream(status=201, body=b"\x00binary\xff",
                        headers={"X-Answer": "42", "Content-Type": "application/octet-stream",
                                 "Proxy-Authenticate": "Basic", "Keep-Alive": "timeout=9"})
    async with upstream_behind(upstream) as sidecar:
        answer = await fetch(
            sidecar.url + "/a%20b/c?x=1&x=2&y=%2F", "PATCH", data=b"payload",
            headers={"X-Custom": "yes", "Connection": "keep-alive, X-Private",
                     "X-Private": "hop", "Keep-Alive": "timeout=5", "TE": "trailers",
                     "Proxy-Authorization": "Basic Zm9vOmJhcg=="})
        upstream_url = sidecar.upstream_url
    seen = upstream.received[0]
    assert (seen.method, seen.path, seen.body) == ("PATCH", "/a b/c", b"payload")
    assert seen.query == (("x", "1"), ("x", "2"), ("y", "/"))
    assert seen.headers["X-Custom"] == "yes"
    for hop in ("X-Private", "Keep-Alive", "TE", "Proxy-Authorization"):
        assert hop not in seen.headers
    assert "http://" + seen.headers["Host"] == upstream_url
    assert answer.status == 201 and answer.body == b"\x00binary\xff"
    assert answer.headers["X-Answer"] == "42"
    assert "Proxy-Authenticate" not in answer.headers and "Keep-Alive" not in answer.headers


@pytest.mark.realtime
async def test_metrics_are_served_as_json_and_the_admin_prefix_is_never_forwarded():
    upstream = Upstream(Script((503, 200)))
    async with upstream_behind(upstream, SidecarPolicy(**FAST)) as sidecar:
        await fetch(sidecar.url + "/one")
        missing = await fetch(sidecar.url + "/_sidecar/nothing")
        served = await fetch(sidecar.url + "/_sidecar/metrics")
    assert missing.status == 404 and upstream.hits == 2
    assert served.status == 200
    assert json.loads(served.body) == {
        "requests": 1, "attempts": 2, "retries": 1, "retries_budget_exhausted": 0,
        "timeouts": 0, "breaker_rejections": 0, "overflow": 0, "connect_errors": 0,
        "responses": {"200": 1}}
    assert sidecar_metrics(sidecar.app) is sidecar.metrics


@pytest.mark.realtime
async def test_https_upstream_with_mutual_tls_needs_the_client_certificate():
    ca = CertificateAuthority()
    try:
        server, client = ca.issue("upstream"), ca.issue("caller")
        upstream = Upstream()
        server_ssl = server_ssl_context(server.certfile, server.keyfile, server.cafile)
        client_ssl = client_ssl_context(client.certfile, client.keyfile, client.cafile)
        async with serve(upstream.app(), ssl_context=server_ssl) as url:
            assert url.startswith("https://")
            async with await start_sidecar(url, client_ssl=client_ssl,
                                           server_ssl=server_ssl) as sidecar:
                assert sidecar.url.startswith("https://")
                answer = await fetch(sidecar.url + "/secure", ssl_context=client_ssl)
            trusting = ssl.create_default_context(cafile=str(ca.cafile))  # but no certificate
            async with await start_sidecar(url, SidecarPolicy(max_retries=0),
                                           client_ssl=trusting) as anonymous:
                refused = await fetch(anonymous.url + "/secure")
        assert answer.status == 200 and refused.status == 502
        assert upstream.hits == 1  # the certificate-less sidecar never got a request through
        assert anonymous.metrics.connect_errors == 1
    finally:
        ca.cleanup()
