"""The breaker panel on the simulated shop in virtual time: it trips, recovers, and cleans up."""

import asyncio
import base64

import matplotlib

matplotlib.use("Agg")

import pytest

from faultline.breaker import CircuitBreaker
from faultline.breaker_widget import FAULTS, BreakerPanel, _state_at, charge_later
from faultline.errors import CircuitOpenError
from faultline.faults import ErrorRate, Hang
from faultline.messages import Request, Response
from faultline.sim import SimShop


@pytest.fixture
def shop():
    return SimShop(seed=11)


@pytest.fixture
def panel(shop, rng):
    panel = BreakerPanel(shop, rng=rng, rate=20.0, timeout=0.5)
    yield panel
    panel.stop()


def window(panel):
    return panel.stats.window_stats(panel._now())["checkout"]


async def test_breaking_payments_trips_the_breaker_and_the_fallback_answers(panel, shop):
    panel.run_toggle.value = True  # what the Start button does
    assert panel.running and panel.run_toggle.description == "Stop load"
    await asyncio.sleep(10)
    assert panel.breaker.state == "closed" and window(panel).success_rate == 1.0

    panel.break_toggle.value = True  # "Break payments": a hang, the first choice
    assert shop.faults.faults("payments") == (Hang(),)
    assert panel.break_toggle.description == "Fix payments"
    await asyncio.sleep(3)
    assert panel.breaker.state == "open"
    assert panel.log.states()[0] == "open" and 10.5 < panel.log.events[0].at < 11.5
    await asyncio.sleep(30)
    stats = window(panel)
    assert stats.success_rate > 0.97 and stats.p50 < 0.05  # answered fast, by the fallback
    assert panel.fallbacks[0] > 400 and panel.rejected == panel.fallbacks[0]
    assert "open" in panel.info.value or "half-open" in panel.info.value

    panel.break_toggle.value = False  # "Fix payments"
    assert shop.faults.faults("payments") == ()
    await asyncio.sleep(8)  # one open_timeout (5 s) and a trial later it is closed again
    assert panel.breaker.state == "closed" and panel.log.states()[-1] == "closed"


async def test_without_the_breaker_every_checkout_waits_for_the_timeout(panel, shop):
    panel.breaker_toggle.value = False
    assert panel.breaker_toggle.description == "Breaker off"
    panel.start()
    panel.break_payments()
    await asyncio.sleep(15)
    stats = window(panel)
    assert stats.success_rate == 0.0 and stats.p50 == pytest.approx(0.5, abs=0.05)
    assert shop.service("orders").busy > 5  # the callers pile up
    assert panel.log.events == []  # nothing tripped: there is no breaker in the path
    assert "breaker off" in panel.info.value


async def test_without_fallback_the_breaker_fails_fast(panel, shop):
    panel.fallback_box.value = False
    panel.start()
    panel.fault_choice.value = "errors: every charge fails (503)"
    panel.break_payments()
    assert shop.faults.faults("payments") == (ErrorRate(1.0),)
    await asyncio.sleep(20)
    stats = window(panel)
    assert stats.success_rate == 0.0 and stats.p99 < 0.05
    assert panel.fallbacks == [0] and panel.rejected > 300


async def test_changing_the_fault_while_broken_switches_it(panel, shop):
    panel.break_payments()
    panel.fault_choice.value = "slow: every charge takes 2 s longer"
    assert shop.faults.faults("payments") == (FAULTS["slow: every charge takes 2 s longer"],)


async def test_stop_cancels_everything_and_restores_the_shop(panel, shop):
    panel.start()
    panel.break_payments()
    await asyncio.sleep(5)
    panel.stop()
    panel.stop()
    await asyncio.sleep(0)
    assert not panel.running and panel.run_toggle.value is False
    assert not panel.break_toggle.value and shop.faults.faults("payments") == ()
    assert "payments" not in shop.client("orders")._wrappers
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    before = shop.client("orders").sent.get("payments", 0)
    assert all(t.done() or t in shop.transport.in_flight for t in others)
    await asyncio.sleep(5)
    assert shop.client("orders").sent.get("payments", 0) == before  # no more load


async def test_a_learners_breaker_class_can_be_plugged_in(shop, rng):
    made = {}

    class Spy(CircuitBreaker):
        def __init__(self, **options):
            made.update(options)
            super().__init__(**options)

    panel = BreakerPanel(shop, breaker_factory=Spy, breaker_options={"open_timeout": 2.0},
                         rng=rng)
    try:
        assert made["open_timeout"] == 2.0 and made["window_size"] == 20
        assert callable(made["clock"]) and callable(made["on_transition"])
    finally:
        panel.stop()


async def test_the_chart_shows_the_last_window_as_a_png(panel):
    panel.start()
    panel.break_payments()
    await asyncio.sleep(35)
    buckets, summary, moves, initial, now, window_s = panel.chart_data()
    assert len(buckets) == 30 and summary.requests > 500
    assert window_s == 30.0 and now == pytest.approx(35.0, abs=0.01)
    assert all(-30 < at <= 0 for _old, _new, at in moves)
    assert initial in ("open", "half_open")  # it tripped more than 30 s ago
    panel.redraw()
    (output,) = panel.chart.outputs
    assert base64.b64decode(output["data"]["image/png"]).startswith(b"\x89PNG")


def test_starting_without_an_event_loop_is_reported(shop):
    panel = BreakerPanel(shop)
    panel.run_toggle.value = True
    assert panel.run_toggle.value is False and "could not start the load" in panel.info.value
    panel.stop()


def test_the_panel_displays_as_a_widget(shop):
    panel = BreakerPanel(shop)
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id


@pytest.mark.parametrize(("options", "name"), [
    ({"rate": 0}, "rate"), ({"timeout": -1}, "timeout"), ({"refresh": float("inf")}, "refresh"),
    ({"user_timeout": 0}, "user_timeout"),
])
def test_bad_settings_are_refused(shop, options, name):
    with pytest.raises(ValueError, match=name):
        BreakerPanel(shop, **options)


def test_state_at_replays_the_log():
    panel_log = BreakerPanel(SimShop()).log
    panel_log("closed", "open", 3)
    panel_log("open", "half_open", 8)
    assert [_state_at(panel_log, t) for t in (0, 3, 5, 8, 9)] == [
        "closed", "open", "open", "half_open", "half_open"]


async def test_charge_later_answers_202_only_when_the_breaker_refuses():
    counter = [0]
    fallback = charge_later(counter)

    async def refused(_request):
        raise CircuitOpenError(3.0)

    async def fine(_request):
        return Response(200, {"charged": 25})

    async def broken(_request):
        raise ConnectionResetError("reset")

    request = Request("POST", "/charge")
    assert (await fallback(refused, request)).status == 202
    assert (await fallback(fine, request)).status == 200
    with pytest.raises(ConnectionResetError):
        await fallback(broken, request)
    assert counter == [1]
