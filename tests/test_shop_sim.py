"""The toy shop in memory, in virtual time: faults measured exactly and fast."""

from __future__ import annotations

import asyncio
import time

import pytest

import faultline as fl
from faultline.errors import UpstreamError
from faultline.load import closed_loop, send_and_record
from faultline.sim import SimShop

CHECKOUT_PATH = ("gateway", "orders", "inventory", "payments", "email")


async def test_a_checkout_goes_through_every_service_in_order():
    shop = SimShop(seed=1)
    response = await shop.route("checkout")()
    assert response.status == 201
    assert response.path == CHECKOUT_PATH
    assert response.json["status"] == "placed"


async def test_login_and_products_take_their_own_paths():
    shop = SimShop(seed=1)
    assert (await shop.route("login")()).path == ("gateway", "login")
    products = await shop.route("products")()
    assert products.path == ("gateway", "inventory")
    assert len(products.json["products"]) == 40


async def test_unknown_routes_and_services_are_named_in_the_error():
    shop = SimShop(seed=1)
    with pytest.raises(ValueError, match="unknown route 'refund'"):
        shop.route("refund")
    with pytest.raises(ValueError, match="unknown service 'billing'"):
        shop.client("billing")
    assert (await shop.request("GET", "/nope")).status == 404


async def test_injected_error_rate_lands_within_statistical_bounds():
    shop = SimShop(seed=5)
    shop.faults.inject("payments", fl.ErrorRate(0.3))
    records = await closed_loop(shop.route("checkout"), clients=20, requests=3000)
    failed = sum(not r.ok for r in records)
    sd = (3000 * 0.3 * 0.7) ** 0.5
    assert abs(failed - 900) < 4 * sd
    assert all(r.status == 503 for r in records if not r.ok)  # passed on up the chain


async def test_a_hang_lasts_exactly_until_the_callers_timeout():
    shop = SimShop(seed=1, network_delay=0.0)
    shop.faults.inject("email", fl.Hang())
    record = await send_and_record(shop.route("checkout"), timeout=2.0)
    assert record.error == "timeout"
    assert record.latency == pytest.approx(2.0, abs=1e-9)


async def test_a_hung_service_keeps_its_worker_after_the_caller_gave_up():
    shop = SimShop(seed=1)
    shop.faults.inject("email", fl.Hang())
    await closed_loop(shop.route("checkout"), clients=3, requests=3, timeout=0.5)
    assert shop.service("email").busy == 3  # a server is not told that its caller left


async def test_a_script_is_followed_exactly():
    shop = SimShop(seed=1)
    shop.faults.inject("payments", fl.Script((500, 503, 200, 500)))
    statuses = [(await shop.route("checkout")()).status for _ in range(6)]
    assert statuses == [502, 503, 201, 502, 201, 201]  # a 503 is passed on, a 500 is a 502


async def test_a_reset_reaches_the_caller_as_connection_reset_error():
    shop = SimShop(seed=1)
    shop.faults.inject("payments", fl.ConnectionReset())
    with pytest.raises(ConnectionResetError, match="payments"):
        await shop.client("orders").request("payments", "POST", "/charge", json={"amount": 1})


async def test_a_blackhole_request_never_reaches_the_service():
    shop = SimShop(seed=1)
    shop.faults.inject("login", fl.Blackhole())
    record = await send_and_record(shop.route("login"), timeout=1.0)
    assert record.error == "timeout"
    assert shop.service("login").received == 0
    shop.faults.inject("login", fl.Hang())
    await send_and_record(shop.route("login"), timeout=1.0)
    assert shop.service("login").received == 1  # a hang takes the request, then stalls


async def test_a_slow_answer_takes_its_size_over_the_bandwidth():
    shop = SimShop(seed=1, network_delay=0.0, work={"inventory": fl.Work(0.0)})
    fast = await shop.client("gateway").request("inventory", "GET", "/products")
    shop.faults.inject("inventory", fl.Slow(1000.0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    slow = await shop.client("gateway").request("inventory", "GET", "/products")
    assert slow.json == fast.json
    assert loop.time() - start == pytest.approx(len(fast.body()) / 1000.0)


async def test_latency_adds_exactly_its_seconds():
    shop = SimShop(seed=1, network_delay=0.0, work={name: fl.Work(0.0) for name in fl.SERVICES})
    loop = asyncio.get_running_loop()
    shop.faults.inject("login", fl.Latency(0.75))
    start = loop.time()
    await shop.route("login")()
    assert loop.time() - start == pytest.approx(0.75)


async def test_an_edge_fault_hits_only_that_edge():
    shop = SimShop(seed=1)
    shop.faults.inject_edge("orders", "inventory", fl.ErrorRate(1.0, status=503))
    checkout = await shop.route("checkout")()
    products = await shop.route("products")()  # gateway -> inventory is untouched
    assert checkout.status == 503 and "orders -> inventory" in checkout.json["error"]
    assert products.status == 200


async def test_client_raises_upstream_error_with_status_and_path():
    shop = SimShop(seed=1)
    shop.faults.inject("email", fl.ErrorRate(1.0, status=503))
    with pytest.raises(UpstreamError) as caught:
        await shop.client("gateway").request("orders", "POST", "/orders", json={})
    assert caught.value.status == 503 and caught.value.service == "orders"
    assert caught.value.path == ("orders", "inventory", "payments", "email")


async def test_wrappers_see_every_attempt_and_edge_faults_again_on_retry():
    shop = SimShop(seed=1)
    shop.faults.inject_edge("orders", "payments", fl.Script((503, 503)))
    attempts = []

    async def retry_three_times(send, request):
        for attempt in range(3):
            attempts.append(attempt)
            try:
                return await send(request)
            except UpstreamError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    shop.client("orders").use("payments", retry_three_times)
    response = await shop.route("checkout")()
    assert response.status == 201
    assert attempts == [0, 1, 2]
    assert shop.client("orders").sent["payments"] == 3


async def test_worker_pool_bounds_concurrency_and_queues_the_rest():
    shop = SimShop(seed=1, workers={"login": 2}, work={"login": fl.Work(1.0, sigma=0)},
                   network_delay=0.0)
    records = await asyncio.gather(*(send_and_record(shop.route("login")) for _ in range(6)))
    ends = sorted(round(r.end, 3) for r in records)
    gateway = shop.service("gateway").work.median
    assert ends == pytest.approx([gateway + 1, gateway + 1, gateway + 2, gateway + 2,
                                  gateway + 3, gateway + 3], abs=0.01)


async def test_idempotency_key_replays_the_order_instead_of_duplicating_it():
    shop = SimShop(seed=1)
    headers = {"Idempotency-Key": "abc"}
    first = await shop.request("POST", "/checkout", json={"item": "x"}, headers=headers)
    second = await shop.request("POST", "/checkout", json={"item": "x"}, headers=headers)
    assert first.json["order_id"] == second.json["order_id"] and second.json["replayed"]
    assert len(shop.service("payments").state["charges"]) == 1


def test_simulated_ten_minutes_is_fast_big_and_reproducible():
    started = time.perf_counter()
    records = fl.simulate(duration=600, rates={"checkout": 15, "login": 5}, seed=11)
    wall = time.perf_counter() - started
    assert len(records) >= 10_000
    assert records[-1].start > 590
    assert wall < 60  # generous bound for slow CI; bench/ reports the real figure
    assert fl.simulate(duration=600, rates={"checkout": 15, "login": 5}, seed=11) == records
    assert fl.simulate(duration=60, rates={"checkout": 15}, seed=12) != records[:900]


def test_events_switch_faults_mid_run():
    records = fl.simulate(
        duration=120, rates={"checkout": 10}, seed=3, timeout=1.0,
        events=[(60.0, lambda shop: shop.faults.inject("payments", fl.ErrorRate(1.0)))])
    before = [r for r in records if r.end < 60]
    after = [r for r in records if r.start > 60.1]
    assert before and all(r.ok for r in before)
    assert after and not any(r.ok for r in after)


def test_progress_is_reported_as_the_simulated_clock_advances():
    seen = []
    fl.simulate(duration=10, rates={"login": 5}, seed=1, progress=seen.append)
    assert seen == [step / 50 for step in range(1, 50)] + [1.0]


async def test_a_retry_that_overtakes_its_first_try_is_refused_not_duplicated():
    shop = SimShop(seed=1, network_delay=0.0)
    shop.faults.inject("payments", fl.Latency(1.0))
    headers = {"Idempotency-Key": "k1"}
    first = asyncio.ensure_future(shop.request("POST", "/checkout", json={}, headers=headers))
    await asyncio.sleep(0.5)  # the first try is still charging
    second = await shop.request("POST", "/checkout", json={}, headers=headers)
    assert second.status == 409 and "in progress" in second.json["error"]
    assert (await first).status == 201
    assert len(shop.service("payments").state["charges"]) == 1


async def test_waiting_counts_requests_queued_for_a_worker():
    shop = SimShop(seed=1, network_delay=0.0, workers={"login": 1},
                   work={"login": fl.Work(1.0, sigma=0)})
    login = shop.service("login")
    tasks = [asyncio.ensure_future(send_and_record(shop.route("login"), timeout=0.5))
             for _ in range(3)]
    await asyncio.sleep(0.1)
    assert (login.busy, login.waiting) == (1, 2)
    await asyncio.gather(*tasks)  # the users gave up at 0.5 s...
    assert (login.busy, login.waiting) == (1, 2)  # ...but the server does not know that
    await asyncio.sleep(3)
    assert (login.busy, login.waiting) == (0, 0)


async def test_middlewares_and_interceptors_see_every_request_and_every_attempt():
    shop = SimShop(seed=1)
    seen = []

    async def server_side(request, call_next):
        seen.append(("server", request.path))
        response = await call_next(request)
        seen.append(("answered", response.status))
        return response

    async def client_side(send, request):
        seen.append(("attempt", request.path))
        assert request.target == {"/charge": "payments", "/reserve": "inventory",
                                  "/send": "email"}[request.path]
        return await send(request)

    async def retry_once(send, request):
        try:
            return await send(request)
        except UpstreamError:
            return await send(request)

    shop.service("payments").middlewares.append(server_side)
    shop.client("orders").interceptors.append(client_side)
    shop.client("orders").use("payments", retry_once)
    shop.faults.inject("payments", fl.Script((503,)))
    assert (await shop.route("checkout")()).status == 201
    attempts = [s for s in seen if s == ("attempt", "/charge")]
    assert len(attempts) == 2  # the interceptor sits inside the retry
    assert [s for s in seen if s[0] == "answered"] == [("answered", 503), ("answered", 200)]


def test_events_due_at_the_same_moment_apply_in_schedule_order():
    order = []
    events = [(5.0, lambda shop, i=i: order.append(i)) for i in range(20)]
    events.insert(0, (7.0, lambda shop: order.append("later")))
    fl.simulate(duration=10, rates={"login": 1}, seed=1, events=events)
    assert order == [*range(20), "later"]
