"""Probes: worker pools sampled under load, one hop's latencies, deadlines on the wire."""

from __future__ import annotations

import asyncio

import matplotlib
import pytest

import faultline as fl
from faultline.probes import DeadlineTrace, LatencyRecorder, PoolSample, observe
from faultline.sim import SimShop
from faultline.timeouts import with_timeout

matplotlib.use("Agg")


def hang_email(shop: fl.Shop) -> None:
    shop.faults.inject("email", fl.Hang())


async def test_a_hung_dependency_fills_the_pool_and_then_the_queue():
    shop = SimShop(seed=1, workers={"gateway": 4})
    seen = await observe(shop, {"checkout": 10, "login": 10}, duration=10, timeout=1.0,
                         events=[(2.0, hang_email)], every=0.5, services=("gateway", "email"))
    gateway = seen.pools["gateway"]
    assert [s.t for s in gateway[:3]] == [0.0, 0.5, 1.0]
    assert all(s.busy <= 4 for s in gateway)
    before = [s for s in gateway if s.t < 2.0]
    assert max(s.waiting for s in before) == 0
    assert gateway[-1].busy == 4 and gateway[-1].waiting > 50  # stuck for good
    assert seen.peak("gateway").inside == max(s.inside for s in gateway)
    assert seen.pools["email"][-1].busy == 4  # the four checkouts that hold the workers
    assert seen.workers == {"gateway": 4, "email": None}
    late_logins = [r for r in seen.route("login") if r.start > 4.0]
    assert late_logins and not any(r.ok for r in late_logins)  # an unrelated route died
    early_logins = [r for r in seen.route("login") if r.start < 2.0]
    assert early_logins and all(r.ok for r in early_logins)


async def test_with_a_timeout_the_pool_recovers_and_login_lives():
    shop = SimShop(seed=1, workers={"gateway": 4})
    shop.client("orders").use("email", lambda send, req: with_timeout(send(req), 0.1))
    seen = await observe(shop, {"checkout": 10, "login": 10}, duration=10, timeout=1.0,
                         events=[(2.0, hang_email)], every=0.5)
    assert all(r.ok for r in seen.route("login"))
    assert all(not r.ok for r in seen.route("checkout") if r.start > 2.1)
    assert shop.service("email").busy > 50  # the hang itself goes on, behind the timeout
    assert shop.service("orders").busy == 0


def test_observe_removes_its_counters_and_is_deterministic():
    async def run():
        shop = SimShop(seed=3)
        seen = await observe(shop, {"login": 20}, duration=2, seed=5)
        assert "handle" not in vars(shop.service("gateway"))
        return seen

    first, again = fl.run_virtual(run), fl.run_virtual(run)
    assert first.records == again.records and first.pools == again.pools


async def test_observe_sends_deadlines_when_asked():
    shop = SimShop(seed=1, workers={"login": 1}, work={"login": fl.Work(0.5, sigma=0)})
    seen = await observe(shop, {"login": 10}, duration=3, timeout=5.0, deadline=1.0,
                         services=("login",))
    assert shop.service("login").deadline_exceeded > 0
    assert all(r.latency < 1.01 for r in seen.records)


async def test_observe_checks_its_arguments():
    shop = SimShop(seed=1)
    with pytest.raises(ValueError, match="rates"):
        await observe(shop, {}, duration=1)
    with pytest.raises(ValueError, match="every"):
        await observe(shop, {"login": 1}, duration=1, every=0)


def test_pool_sample_waiting_never_negative():
    assert PoolSample(0.0, 3, 5).waiting == 2
    assert PoolSample(0.0, 3, 2).waiting == 0


async def test_the_latency_recorder_times_every_call_on_one_edge():
    shop = SimShop(seed=1, network_delay=0.0, work={"email": fl.Work(0.01, sigma=0)})
    recorder = LatencyRecorder()
    shop.client("orders").use("email", recorder)
    for _ in range(3):
        await shop.route("checkout")()
    assert recorder.latencies == pytest.approx([0.01] * 3)
    shop.faults.inject("email", fl.ErrorRate(1.0))
    await shop.route("checkout")()
    assert recorder.failures == 1 and len(recorder.latencies) == 4


async def test_the_deadline_trace_shows_it_shrinking_hop_by_hop():
    shop = SimShop(seed=1, network_delay=0.002)
    with DeadlineTrace(shop) as trace:
        await shop.route("checkout", deadline=0.5)()
    assert "send" not in vars(shop.transport)
    assert [(s.target, s.path) for s in trace.sent] == [
        ("gateway", "/checkout"), ("orders", "/orders"), ("inventory", "/reserve"),
        ("payments", "/charge"), ("email", "/send")]
    left = [s.deadline_ms for s in trace.sent]
    assert left[0] == 500 and left == sorted(left, reverse=True) and left[-1] < 480
    assert trace.sent[0].t == 0.0
    lines = trace.table().splitlines()
    assert "X-Deadline-Ms" in lines[0] and lines[1].split()[-1] == "500"


async def test_without_a_deadline_the_trace_shows_none():
    shop = SimShop(seed=1)
    with DeadlineTrace(shop) as trace:
        await shop.route("login")()
    assert [s.deadline_ms for s in trace.sent] == [None, None]
    assert trace.table().splitlines()[1].split()[-1] == "-"


@pytest.mark.realtime
async def test_probes_work_on_the_live_shop():
    async with fl.LiveShop(seed=1, workers={"gateway": 2}) as shop:
        with DeadlineTrace(shop) as trace:
            await shop.route("login", deadline=1.0)()
        assert [s.target for s in trace.sent] == ["gateway", "login"]
        assert 900 < trace.sent[1].deadline_ms <= 1000
        seen = await observe(shop, {"login": 20}, duration=0.3, timeout=1.0, every=0.02)
        assert len(seen.pools["gateway"]) >= 10 and all(r.ok for r in seen.records)
        assert "handle" not in vars(shop.service("gateway"))


def test_the_pool_timeline_has_a_panel_per_route_and_one_for_the_pool():
    from faultline import viz

    async def run():
        shop = SimShop(seed=1, workers={"gateway": 4})
        return await observe(shop, {"checkout": 10, "login": 10}, duration=6, timeout=1.0,
                             events=[(2.0, hang_email)], every=0.25)

    seen = fl.run_virtual(run)
    fig = viz.pool_timeline(seen.records, seen.pools["gateway"], workers=4,
                            events=[(2.0, "email hangs")], title="Pool")
    axes = fig.axes
    titles = [ax.get_title(loc="left") for ax in axes]
    assert titles[0].startswith("checkout: ") and titles[1].startswith("login: ")
    assert titles[2].startswith("the gateway's worker pool")
    assert axes[0].get_yscale() == "log"
    assert fig._suptitle.get_text() == "Pool"
    assert any(t.get_text() == "email hangs" for t in axes[0].texts)
    with pytest.raises(ValueError, match="records"):
        viz.pool_timeline([], seen.pools["gateway"])
    with pytest.raises(ValueError, match="pool"):
        viz.pool_timeline(seen.records, [])
    matplotlib.pyplot.close("all")


async def test_a_cancelled_observation_still_cleans_up():
    shop = SimShop(seed=1)
    task = asyncio.ensure_future(observe(shop, {"login": 10}, duration=10))
    await asyncio.sleep(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "handle" not in vars(shop.service("gateway"))


async def test_probes_put_back_what_was_there_before_them():
    shop = SimShop(seed=1)
    from faultline.hops import first_try_hangs

    first_try_hangs("login")(shop)  # patches login's handle too
    patched = shop.service("login").handle
    await observe(shop, {"products": 5}, duration=1, services=("login",))
    assert shop.service("login").handle is patched
    with DeadlineTrace(shop) as outer:
        with DeadlineTrace(shop) as inner:
            await shop.route("products")()
        await shop.route("products")()
    assert (len(outer.sent), len(inner.sent)) == (4, 2)
    assert "send" not in vars(shop.transport)
