"""A real Envoy from a SidecarPolicy: the config it gets, and what it does to live services."""

from __future__ import annotations

import asyncio
import os
import re

import aiohttp
import pytest
from multidict import CIMultiDict

import faultline as fl
from faultline.envoy import EnvoyError, EnvoyProxy, OtlpSink, envoy_config, envoy_version
from faultline.live import LiveShop
from faultline.policy import SidecarPolicy

QUIET = dict(backoff_base=0.005, backoff_cap=0.02)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _cluster(config: dict) -> dict:
    return config["static_resources"]["clusters"][0]


def _route(config: dict) -> dict:
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return manager["typed_config"]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]


# --- the config, without running Envoy ------------------------------------------------------

def test_config_maps_timeouts_and_retries_of_the_policy():
    policy = SidecarPolicy(timeout=1.5, per_try_timeout=0.4, max_retries=3,
                           backoff_base=0.02, backoff_cap=0.2)
    route = _route(envoy_config(policy, ("127.0.0.1", 8080)))
    assert route["timeout"] == "1.500s"
    retry = route["retry_policy"]
    assert retry["per_try_timeout"] == "0.400s"
    assert retry["num_retries"] == 3
    assert retry["retry_on"] == "connect-failure,reset,refused-stream,retriable-status-codes"
    assert retry["retriable_status_codes"] == [502, 503, 504]
    assert retry["retry_back_off"] == {"base_interval": "0.020s", "max_interval": "0.200s"}
    methods = {h["string_match"]["exact"] for h in retry["retriable_request_headers"]}
    assert methods == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"}


def test_config_maps_breaker_budget_and_concurrency_to_the_cluster():
    policy = SidecarPolicy(breaker_consecutive_failures=4, breaker_open_seconds=2.0,
                           max_concurrent=7, retry_budget_ratio=0.25, retry_budget_min=3)
    cluster = _cluster(envoy_config(policy, ("127.0.0.1", 8080)))
    outlier = cluster["outlier_detection"]
    assert outlier["consecutive_5xx"] == 4
    assert outlier["base_ejection_time"] == outlier["max_ejection_time"] == "2.000s"
    assert outlier["max_ejection_percent"] == 100
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    threshold = cluster["circuit_breakers"]["thresholds"][0]
    assert threshold["max_requests"] == threshold["max_pending_requests"] == 7
    assert threshold["retry_budget"] == {"budget_percent": {"value": 25.0},
                                         "min_retry_concurrency": 3}


def test_config_without_breaker_budget_or_retries_leaves_them_out():
    policy = SidecarPolicy(max_retries=0, retry_budget_ratio=None,
                           breaker_consecutive_failures=None)
    config = envoy_config(policy, ("127.0.0.1", 8080))
    assert "retry_policy" not in _route(config)
    assert "outlier_detection" not in _cluster(config)
    assert "retry_budget" not in _cluster(config)["circuit_breakers"]["thresholds"][0]


@pytest.mark.parametrize("kwargs, message", [
    ({"upstream": ("127.0.0.1", 70000)}, "upstream port"),
    ({"upstream": "127.0.0.1:80"}, "upstream"),
    ({"admin_port": -1}, "admin_port"),
    ({"faults": {"abort_percent": 150}}, "abort_percent"),
    ({"faults": {"abort": 5}}, "unknown key"),
    ({"faults": {"delay_percent": 5, "delay_seconds": 0}}, "delay_seconds"),
])
def test_config_rejects_bad_arguments_naming_them(kwargs, message):
    args = {"upstream": ("127.0.0.1", 8080), **kwargs}
    with pytest.raises(ValueError, match=message):
        envoy_config(SidecarPolicy(), **args)


# --- a live Envoy in front of the live shop ---------------------------------------------------

async def _get(session: aiohttp.ClientSession, url: str, method: str = "GET",
               headers: dict | None = None) -> tuple[int, str, CIMultiDict[str]]:
    async with session.request(method, url, headers=headers,
                               json={"quantity": 1} if method == "POST" else None) as answer:
        return answer.status, await answer.text(), CIMultiDict(answer.headers)


@pytest.mark.realtime
async def test_get_is_retried_on_503_and_stats_count_the_retries():
    policy = SidecarPolicy(max_retries=2, **QUIET)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Script((503, 503, 200)))
        status, _, headers = await _get(session, envoy.url + "/products")
        stats = await envoy.stats("cluster.upstream.")
    assert status == 200
    assert shop.service("inventory").received == 3
    assert headers["x-envoy-attempt-count"] == "3"
    assert stats["upstream_rq_retry"] == 2
    assert stats["upstream_rq_retry_success"] == 1


@pytest.mark.realtime
async def test_post_is_not_retried():
    policy = SidecarPolicy(max_retries=2, **QUIET)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Script((503, 503, 200)))
        status, _, _ = await _get(session, envoy.url + "/reserve", "POST")
        shop.faults.inject("inventory", fl.ConnectionReset())
        reset_status, _, _ = await _get(session, envoy.url + "/reserve", "POST")
        stats = await envoy.stats("cluster.upstream.")
    assert (status, reset_status) == (503, 503)
    assert shop.service("inventory").received == 2  # one try each
    assert stats["upstream_rq_retry"] == 0


@pytest.mark.realtime
async def test_connection_errors_are_retried_for_get():
    policy = SidecarPolicy(max_retries=2, breaker_consecutive_failures=None, **QUIET)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Script((fl.ConnectionReset(), 200)))
        status, _, _ = await _get(session, envoy.url + "/products")
        await shop.stop()  # nobody listens any more: connect failures
        dead_status, body, _ = await _get(session, envoy.url + "/products")
        stats = await envoy.stats("cluster.upstream.")
    assert status == 200
    assert dead_status == 503 and "connect" in body
    assert stats["upstream_cx_connect_fail"] == 3
    assert stats["upstream_rq_retry"] == 1 + 2


@pytest.mark.realtime
async def test_a_hung_upstream_gets_504_after_the_route_timeout():
    policy = SidecarPolicy(timeout=0.3, max_retries=2, **QUIET)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Hang())
        loop = asyncio.get_running_loop()
        start = loop.time()
        status, body, _ = await _get(session, envoy.url + "/products")
        took = loop.time() - start
        stats = await envoy.stats("cluster.upstream.")
    assert status == 504 and body == "upstream request timeout"
    assert 0.25 <= took < 2.0  # Envoy's timer and our clock differ by a few ms
    assert stats["upstream_rq_timeout"] == 1
    assert shop.service("inventory").received == 1  # no time left for a retry


@pytest.mark.realtime
async def test_per_try_timeouts_are_retried():
    policy = SidecarPolicy(timeout=2.0, per_try_timeout=0.1, max_retries=2, **QUIET)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Script((fl.Hang(), 200)))
        status, _, _ = await _get(session, envoy.url + "/products")
        stats = await envoy.stats("cluster.upstream.")
    assert status == 200
    assert stats["upstream_rq_per_try_timeout"] == 1
    assert stats["upstream_rq_retry"] == 1


@pytest.mark.realtime
async def test_consecutive_5xx_eject_the_host_and_envoy_answers_503_without_calling_it():
    policy = SidecarPolicy(max_retries=0, breaker_consecutive_failures=3,
                           breaker_open_seconds=30.0)
    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.ErrorRate(1.0, 503))
        first = [await _get(session, envoy.url + "/products") for _ in range(3)]
        await envoy.wait_for_stat("cluster.upstream.outlier_detection.ejections_active")
        hits = shop.service("inventory").received
        after = [await _get(session, envoy.url + "/products") for _ in range(4)]
        stats = await envoy.stats("cluster.upstream.")
    assert [s for s, _, _ in first] == [503] * 3 and hits == 3
    assert [(s, b) for s, b, _ in after] == [(503, "no healthy upstream")] * 4
    assert shop.service("inventory").received == hits  # not called while ejected
    assert stats["outlier_detection.ejections_enforced_consecutive_5xx"] == 1
    assert stats["upstream_cx_none_healthy"] == 4


@pytest.mark.realtime
async def test_request_id_is_kept_when_given_and_added_when_absent():
    seen: list[str | None] = []

    async def record(request, call_next):
        seen.append(request.header("x-request-id"))
        return await call_next(request)

    async with LiveShop(seed=1) as shop, EnvoyProxy(SidecarPolicy(), shop.url("inventory")) \
            as envoy, aiohttp.ClientSession() as session:
        shop.service("inventory").middlewares.append(record)
        _, _, kept = await _get(session, envoy.url + "/products", headers={"x-request-id": "r-1"})
        _, _, added = await _get(session, envoy.url + "/products")
    assert kept["x-request-id"] == "r-1" and seen[0] == "r-1"
    assert re.fullmatch(r"[0-9a-f-]{36}", added["x-request-id"])
    assert seen[1] == added["x-request-id"]


@pytest.mark.realtime
async def test_traceparent_continues_the_trace_and_spans_reach_the_otlp_sink():
    seen: list[str | None] = []

    async def record(request, call_next):
        seen.append(request.header("traceparent"))
        return await call_next(request)

    async with LiveShop(seed=1) as shop, OtlpSink() as sink, \
            EnvoyProxy(SidecarPolicy(), shop.url("inventory"), otlp_port=sink.port) as envoy, \
            aiohttp.ClientSession() as session:
        shop.service("inventory").middlewares.append(record)
        status, _, _ = await _get(session, envoy.url + "/products",
                                  headers={"traceparent": TRACEPARENT})
        spans = await sink.wait_for(1)
    assert status == 200
    version, trace_id, span_id, flags = seen[0].split("-")
    assert (version, trace_id) == ("00", "0af7651916cd43dd8448eb211c80319c")
    assert int(flags, 16) & 1  # still sampled
    assert span_id != "b7ad6b7169203331"  # Envoy's own span, a child of the caller's
    span = spans[0]
    assert (span.trace_id, span.span_id, span.parent_id) == (trace_id, span_id,
                                                             "b7ad6b7169203331")
    assert span.service == "envoy-sidecar" and span.end_ns >= span.start_ns > 0


@pytest.mark.realtime
async def test_fault_filter_aborts_before_the_upstream_and_counts_it():
    async with LiveShop(seed=1) as shop, \
            EnvoyProxy(SidecarPolicy(), shop.url("inventory"),
                       faults={"abort_percent": 100, "abort_status": 503}) as envoy, \
            aiohttp.ClientSession() as session:
        answers = [await _get(session, envoy.url + "/products") for _ in range(5)]
        stats = await envoy.stats("http.sidecar.fault.")
    assert [(s, b) for s, b, _ in answers] == [(503, "fault filter abort")] * 5
    assert stats["aborts_injected"] == 5
    assert shop.service("inventory").received == 0


@pytest.mark.realtime
async def test_requests_over_max_concurrent_and_its_queue_overflow_with_503_at_once():
    policy = SidecarPolicy(timeout=0.5, max_concurrent=2, breaker_consecutive_failures=None)
    arrived, seen = asyncio.Event(), []

    async def count(request, call_next):
        seen.append(request.path)
        if len(seen) == 2:
            arrived.set()
        return await call_next(request)

    async with LiveShop(seed=1) as shop, EnvoyProxy(policy, shop.url("inventory")) as envoy, \
            aiohttp.ClientSession() as session:
        shop.faults.inject("inventory", fl.Hang())
        shop.service("inventory").middlewares.append(count)
        first = [asyncio.create_task(_get(session, envoy.url + "/products")) for _ in range(2)]
        await asyncio.wait_for(arrived.wait(), 5)  # two in flight, two connections open
        rest = await asyncio.gather(*(_get(session, envoy.url + "/products") for _ in range(4)))
        answers = [*await asyncio.gather(*first), *rest]
        stats = await envoy.stats("cluster.upstream.")
    # Two more wait for a connection (max_pending_requests), the last two overflow at once.
    overloaded = [s for s, _, h in answers if h.get("x-envoy-overloaded") == "true"]
    assert overloaded == [503] * 2
    assert sorted(s for s, _, _ in answers) == [503] * 2 + [504] * 4
    assert stats["upstream_rq_pending_overflow"] == 2
    # The two in flight, and the waiting ones that got a connection when those timed out.
    assert 2 <= shop.service("inventory").received <= 4


@pytest.mark.realtime
async def test_two_envoys_run_at_once_with_their_own_base_ids_and_ports():
    async with LiveShop(seed=1) as shop, \
            EnvoyProxy(SidecarPolicy(), shop.url("inventory")) as one, \
            EnvoyProxy(SidecarPolicy(), shop.url("login")) as two, \
            aiohttp.ClientSession() as session:
        assert one.base_id != two.base_id
        assert len({one.url, one.admin_url, two.url, two.admin_url}) == 4
        first, _, _ = await _get(session, one.url + "/products")
        second, _, _ = await _get(session, two.url + "/login", "POST")
        pids = one.pid, two.pid
    assert (first, second) == (200, 200)
    assert one.pid is None and two.pid is None
    for pid in pids:  # stopped and reaped: the PIDs are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.realtime
async def test_rejected_config_and_missing_binary_raise_envoy_error_with_details():
    with pytest.raises(EnvoyError, match=r"exited with status .*\n.*"):
        # A STATIC cluster needs an IP address: Envoy refuses the hostname and says why.
        await EnvoyProxy(SidecarPolicy(), ("localhost", 8080)).start()
    with pytest.raises(EnvoyError, match="no envoy binary"):
        await EnvoyProxy(SidecarPolicy(), ("127.0.0.1", 8080), binary="/nowhere/envoy").start()


def test_envoy_version_is_the_pinned_one():
    assert envoy_version() == "1.40.0"
