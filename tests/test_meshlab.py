"""Our sidecar beside Envoy on one fault scenario: where the two must agree, they do."""

from __future__ import annotations

import pytest

from faultline.envoy import EnvoyProxy
from faultline.live import LiveShop
from faultline.meshlab import (
    PROXIES,
    SCENARIO_POLICY,
    Scenario,
    compare_proxies,
    envoy_fault_injection,
    fault_tour,
    overload_burst,
    retry_multiplication,
)
from faultline.policy import SidecarPolicy
from faultline.sidecar import start_sidecar

pytestmark = pytest.mark.realtime


async def test_sidecar_and_envoy_agree_on_the_same_fault_scenario():
    scenario = Scenario(gets=120, posts=40, hang_requests=20)
    result = await compare_proxies(SCENARIO_POLICY, scenario)
    sent = scenario.gets + scenario.posts + scenario.hang_requests
    limit = SCENARIO_POLICY.max_retries
    assert result.row("requests received").sidecar == result.row("requests received").envoy == sent
    # POSTs are never retried, by either proxy: the service got each at most once.
    assert result.row("highest attempt number on a POST").sidecar == 1
    assert result.row("highest attempt number on a POST").envoy == 1
    for proxy in PROXIES:
        run = result.runs[proxy]
        assert run.upstream["POST"] <= scenario.posts
        assert 1 < run.max_attempt["GET"] <= 1 + limit  # GETs retried, within the policy
        assert sum(run.statuses.values()) == sent
    retries = result.row("retries")
    assert 0 < retries.sidecar <= limit * (scenario.gets + scenario.hang_requests)
    assert 0 < retries.envoy <= limit * (scenario.gets + scenario.hang_requests)
    # What each proxy says it sent upstream is what the service counted.
    tries = result.row("tries sent upstream")
    gets, posts = result.row("GET tries the service got"), result.row("POST tries the service got")
    assert tries.sidecar == gets.sidecar + posts.sidecar
    assert tries.envoy == gets.envoy + posts.envoy
    # The hang phase: both time out, then both stop calling (breaker open / host ejected).
    n = SCENARIO_POLICY.breaker_consecutive_failures
    for proxy in ("sidecar", "envoy"):
        row_timeouts = result.row("timeouts answered 504")
        row_refused = result.row("refused: breaker open / host ejected")
        timeouts = getattr(row_timeouts, proxy)
        refused = getattr(row_refused, proxy)
        assert n <= timeouts <= n + scenario.hang_concurrency, proxy
        assert refused >= scenario.hang_requests - timeouts, proxy
    assert "| retries | `retries` |" in result.markdown()


@pytest.mark.parametrize("proxy", PROXIES)
async def test_mesh_retries_multiply_application_retries(proxy):
    async with LiveShop(seed=3) as shop:
        both = await retry_multiplication(proxy, app_attempts=3, mesh_retries=2, shop=shop)
        one_layer = await retry_multiplication(proxy, app_attempts=3, mesh_retries=0, shop=shop)
    assert both.upstream_hits == both.expected == 9
    assert one_layer.upstream_hits == one_layer.expected == 3


def test_scenario_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match="gets"):
        Scenario(gets=-1)
    with pytest.raises(ValueError, match="concurrency"):
        Scenario(concurrency=0)
    with pytest.raises(ValueError, match="error_rate"):
        Scenario(error_rate=1.5)


async def test_an_unknown_proxy_is_refused_by_name():
    async with LiveShop(seed=3) as shop:
        with pytest.raises(ValueError, match="proxy must be one of"):
            await retry_multiplication("linkerd", shop=shop)


async def test_fault_tour_shows_the_same_first_three_answers_through_both_proxies():
    policy = SidecarPolicy(timeout=0.3, max_retries=2, backoff_base=0.005, backoff_cap=0.01,
                           breaker_consecutive_failures=5, breaker_open_seconds=5.0)
    async with LiveShop(seed=3) as shop:
        sidecar = await start_sidecar(shop.url("inventory"), policy)
        try:
            ours = await fault_tour(sidecar.url, shop)
        finally:
            await sidecar.stop()
        async with EnvoyProxy(policy, shop.url("inventory")) as envoy:
            theirs = await fault_tour(envoy.url, shop)
    for tour in (ours, theirs):
        assert [(s.statuses, s.tries) for s in tour[:3]] == [((200,), (3,)), ((503,), (1,)),
                                                             ((504,), (1,))]
        last = tour[3]
        assert set(last.statuses) == {503} and last.tries[-1] == 0  # refused without a call
    assert ours[0].summary() == "200 after 3 tries"
    # Our breaker opens after 5 failed requests; Envoy ejects after 5 failed tries.
    assert all(t >= 1 for t in ours[3].tries[:5]) and ours[3].tries[5:] == (0, 0, 0)
    # (Envoy ejects on its main thread, then tells its worker: one more try may slip by.)
    assert 5 <= sum(theirs[3].tries) <= 6


def test_proxy_bars_draws_one_bar_per_proxy_and_behaviour():
    import matplotlib

    matplotlib.use("Agg")
    from faultline.viz import proxy_bars

    ax = proxy_bars({"retries": {"our sidecar": 60, "Envoy": 70},
                     "timeouts": {"our sidecar": 10, "Envoy": 11}}, title="t")
    assert len(ax.patches) == 4
    assert [t.get_text() for t in ax.get_yticklabels()] == ["retries", "timeouts"]
    with pytest.raises(ValueError, match="count must be >= 0"):
        proxy_bars({"retries": {"x": -1}})
    with pytest.raises(ValueError, match="must not be empty"):
        proxy_bars({})


async def test_a_burst_over_max_concurrent_is_turned_away_at_once_and_counted():
    async with LiveShop(seed=1) as shop:
        ours = await overload_burst("sidecar", shop=shop, max_concurrent=2, burst=8, work=0.5)
        envoy = await overload_burst("envoy", shop=shop, max_concurrent=2, burst=8, work=0.5)
    # Ours lets exactly two in and refuses the other six at once, and counts them.
    assert (ours.served, ours.overloaded, ours.count) == (2, 6, 6)
    assert sorted(ours.statuses) == [200] * 2 + [503] * 6
    # Envoy lets two in and queues up to two more for a connection (max_pending_requests):
    # how many of those it queues depends on when its connections come up.
    assert 2 <= envoy.served <= 4
    assert envoy.overloaded == envoy.count == 8 - envoy.served
    assert sorted(envoy.statuses) == [200] * envoy.served + [503] * envoy.overloaded


async def test_envoy_fault_filter_breaks_calls_in_the_mesh_and_its_aborts_are_not_retried():
    async with LiveShop(seed=1) as shop:
        result = await envoy_fault_injection(shop=shop, requests=200, abort_percent=25,
                                             delay_percent=25, delay_seconds=0.01)
    aborted = result.statuses.get(503, 0)
    assert aborted == result.aborts_injected
    assert result.statuses.get(200, 0) == result.served == 200 - aborted
    assert result.retries == 0  # the fault filter answers before the router: no retry
    # 25 % of 200, well within 5 standard deviations (sd ≈ 6.1)
    assert 20 <= result.aborts_injected <= 80
    assert 20 <= result.delays_injected <= 80
