"""The toy shop over real HTTP on 127.0.0.1: real sockets, real resets, the admin endpoint."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

import faultline as fl
from faultline.live import LiveShop
from faultline.load import closed_loop, send_and_record
from faultline.sim import SimShop

pytestmark = pytest.mark.realtime


async def test_each_service_listens_on_its_own_ephemeral_loopback_port():
    async with LiveShop(seed=1) as shop:
        urls = [shop.url(name) for name in shop.services]
        assert all(url.startswith("http://127.0.0.1:") for url in urls)
        assert len(set(urls)) == 6
        response = await shop.route("checkout")()
        assert response.status == 201
        assert response.path == ("gateway", "orders", "inventory", "payments", "email")
    with pytest.raises(RuntimeError, match="not running"):
        shop.url("gateway")


async def test_same_handlers_answer_the_same_over_http_and_in_memory():
    sim = SimShop(seed=4)
    async with LiveShop(seed=4) as live:
        for route in fl.ROUTES:
            over_http = await live.route(route)()
            in_memory = await sim.route(route)()
            assert (over_http.status, over_http.json, over_http.path) == (
                in_memory.status, in_memory.json, in_memory.path), route


async def test_the_shop_starts_twice_in_one_loop_and_start_shop_replaces_the_old_one():
    first = await fl.start_shop(seed=1)
    second = await fl.start_shop(seed=1)
    try:
        assert not first.running and second.running
        assert (await second.route("login")()).status == 200
    finally:
        await fl.stop_shop()
        await fl.stop_shop()  # twice is fine
    assert not second.running


async def test_injected_error_rate_lands_within_statistical_bounds_over_http():
    async with LiveShop(seed=9) as shop:
        shop.faults.inject("login", fl.ErrorRate(0.3))
        records = await closed_loop(shop.route("login"), clients=10, requests=600)
    failed = sum(not r.ok for r in records)
    sd = (600 * 0.3 * 0.7) ** 0.5
    assert abs(failed - 180) < 4 * sd


async def test_a_hang_over_http_lasts_until_the_callers_timeout():
    async with LiveShop(seed=1) as shop:
        shop.faults.inject("email", fl.Hang())
        record = await send_and_record(shop.route("checkout"), timeout=0.2)
    assert record.error == "timeout"
    assert 0.2 <= record.latency < 1.0


async def test_a_script_is_followed_exactly_over_http():
    async with LiveShop(seed=1) as shop:
        shop.faults.inject("login", fl.Script((500, 503, 200, 429)))
        statuses = [(await shop.client("gateway").request(
            "login", "POST", "/login", json={}, raise_for_status=False)).status
            for _ in range(5)]
    assert statuses == [500, 503, 200, 429, 200]


async def test_an_injected_reset_is_a_real_tcp_reset():
    async with LiveShop(seed=1) as shop:
        shop.faults.inject("payments", fl.ConnectionReset())
        with pytest.raises(ConnectionResetError, match="payments"):
            await shop.client("orders").request("payments", "POST", "/charge", json={})
        # and a raw aiohttp client sees the connection die with no HTTP answer at all
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.post(shop.url("payments") + "/charge", json={}) as r:
                    await r.read()
        checkout = await shop.route("checkout")()
    assert checkout.status == 502 and "ConnectionResetError" in checkout.json["error"]


async def test_a_stopped_service_refuses_connections():
    async with LiveShop(seed=1) as shop:
        url = shop.url("login")
    async with LiveShop(seed=1) as other:
        other.http.urls["login"] = url  # point at the closed port
        with pytest.raises(ConnectionRefusedError, match="login"):
            await other.client("gateway").request("login", "POST", "/login", json={})


async def test_a_slow_answer_trickles_over_the_socket():
    async with LiveShop(seed=1, work={"inventory": fl.Work(0.0)}) as shop:
        fast = await shop.client("gateway").request("inventory", "GET", "/products")
        size = len(fast.body())
        shop.faults.inject("inventory", fl.Slow(size / 0.3))  # 0.3 s for the whole body
        started = time.perf_counter()
        slow = await shop.client("gateway").request("inventory", "GET", "/products")
        elapsed = time.perf_counter() - started
    assert slow.json == fast.json
    assert 0.25 <= elapsed < 1.5


async def test_latency_over_http_adds_at_least_its_seconds():
    async with LiveShop(seed=1) as shop:
        shop.faults.inject("login", fl.Latency(0.15))
        record = await send_and_record(shop.route("login"))
    assert record.ok and 0.15 <= record.latency < 1.0


async def test_admin_endpoint_switches_faults_at_runtime():
    async with LiveShop(seed=1) as shop, aiohttp.ClientSession() as session:
        admin = shop.url("payments") + "/_admin/faults"
        async with session.put(admin, json={"faults": [
                {"kind": "error_rate", "probability": 1.0, "status": 500}]}) as answer:
            shown = await answer.json()
        assert answer.status == 200
        assert shown["faults"] == [{"kind": "error_rate", "probability": 1.0, "status": 500}]
        assert shown["fallacies"] == ["The network is reliable"]
        assert (await shop.route("checkout")()).status == 502

        async with session.put(admin + "?caller=orders", json={"kind": "latency",
                                                                "seconds": 0.01}) as answer:
            assert answer.status == 200
        assert shop.faults.faults("payments", caller="orders") == (fl.Latency(0.01),)

        async with session.put(admin, json={"kind": "hang", "probability": 7}) as answer:
            error = await answer.json()
        assert answer.status == 400 and "probability must be in [0, 1]" in error["error"]

        async with session.delete(admin) as answer:
            assert (await answer.json())["faults"] == []
        async with session.delete(admin + "?caller=orders") as answer:
            assert answer.status == 200
        assert shop.faults.snapshot() == {}
        assert (await shop.route("checkout")()).status == 201


async def test_invalid_json_body_is_a_400_that_says_so():
    async with LiveShop(seed=1) as shop, aiohttp.ClientSession() as session:
        answer = await session.post(shop.url("login") + "/login", data=b"{nope",
                                    headers={"Content-Type": "application/json"})
        assert answer.status == 400
        assert "not valid JSON" in (await answer.json())["error"]


async def test_stop_is_quick_even_with_hung_handlers():
    shop = await LiveShop(seed=1).start()
    shop.faults.inject("email", fl.Hang())
    await closed_loop(shop.route("checkout"), clients=5, requests=5, timeout=0.05)
    started = time.perf_counter()
    await shop.stop()
    assert time.perf_counter() - started < 2.0
    await asyncio.sleep(0)


async def test_network_calls_cost_more_than_local_calls():
    async with LiveShop(seed=1) as shop:
        timings = await fl.compare_local_and_network(shop, n=50)
    local = sorted(timings["in-process call"])[25]
    network = sorted(timings["HTTP on loopback"])[25]
    assert network > local
