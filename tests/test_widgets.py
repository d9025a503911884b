"""The fault panel: exact windowed statistics, and widgets wired to a fake shop."""

import asyncio
import base64
import html
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")

import pytest

from faultline import faults
from faultline.load import Record
from faultline.widgets import FaultPanel, LiveStats


def rec(end: float, latency: float = 0.1, *, ok: bool = True, route: str = "checkout") -> Record:
    return Record(end - latency, end, 200 if ok else 503, None, ("gateway",), route)


# --- LiveStats: the logic, no widgets


def test_window_counts_requests_that_ended_inside_it():
    stats = LiveStats(["checkout"], window=10.0)
    stats.extend([
        rec(1.0), rec(2.0),  # ended before (2, 12]: out
        rec(2.5, ok=False), rec(5.0), rec(8.0), rec(12.0),  # in (12.0 is the edge)
        rec(12.5),  # not yet
    ])
    window = stats.window_stats(12.0)["checkout"]
    assert (window.start, window.end) == (2.0, 12.0)
    assert (window.requests, window.failed, window.success_rate) == (4, 1, 0.75)


def test_window_p99_is_the_nearest_rank_latency():
    stats = LiveStats(["checkout"], window=30.0)
    stats.extend(rec(10.0, latency=ms / 1000) for ms in range(100, 0, -1))
    window = stats.window_stats(10.0)["checkout"]
    assert window.p99 == pytest.approx(0.099)
    assert window.p50 == pytest.approx(0.050)


def test_a_failed_request_counts_whatever_its_status():
    stats = LiveStats(["login"], window=5.0)
    stats.add(Record(0.0, 0.5, None, "timeout", (), "login"))
    stats.add(Record(0.0, 0.5, 404, None, (), "login"))  # a 4xx is an answer: ok
    assert stats.window_stats(1.0)["login"].success_rate == 0.5


def test_a_route_without_requests_has_no_rate_and_no_percentiles():
    stats = LiveStats(["checkout", "login"], window=5.0)
    stats.add(rec(1.0))
    login = stats.window_stats(1.0)["login"]
    assert (login.requests, login.success_rate, login.p50, login.p99) == (0, None, None, None)


def test_buckets_split_the_window_by_the_second_each_request_ended():
    stats = LiveStats(["checkout"], window=4.0, bucket=1.0)
    stats.extend([rec(6.9), rec(7.5), rec(8.0, ok=False), rec(8.2, latency=0.4),
                  rec(10.3, ok=False)])
    buckets = stats.buckets(10.5)["checkout"]
    assert [(b.start, b.end) for b in buckets] == [(7, 8), (8, 9), (9, 10), (10, 11)]
    assert [b.requests for b in buckets] == [2, 1, 0, 1]  # 8.0 ends (7, 8]; 6.9 is too old
    assert [b.success_rate for b in buckets] == [0.5, 1.0, None, 0.0]
    assert buckets[1].p99 == pytest.approx(0.4)


def test_prune_forgets_what_left_the_window():
    stats = LiveStats(["checkout"], window=10.0)
    stats.extend([rec(1.0), rec(15.0)])
    stats.prune(20.0)
    assert stats.window_stats(11.0)["checkout"].requests == 0  # the one at 1.0 is gone
    assert stats.window_stats(20.0)["checkout"].requests == 1


def test_a_new_route_gets_its_own_series():
    stats = LiveStats(["checkout"])
    stats.add(rec(1.0, route="products"))
    assert stats.routes == ("checkout", "products")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"window": 0}, "window"), ({"window": float("nan")}, "window"), ({"bucket": -1}, "bucket"),
])
def test_stats_refuse_bad_settings(kwargs, name):
    with pytest.raises(ValueError, match=name):
        LiveStats(["checkout"], **kwargs)


# --- FaultPanel wired to a fake shop


@dataclass
class Response:
    status: int
    path: tuple[str, ...] = ("gateway",)


class FakeFaults:
    """Records what the panel asks of the shop's fault injector."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.active: dict[str, list[dict]] = {}

    def inject(self, service, *injected):
        self.calls.append(("inject", service, injected))
        self.active[service] = [f.to_dict() for f in injected]

    def clear(self, service=None):
        self.calls.append(("clear", service))
        if service is None:
            self.active.clear()
        else:
            self.active.pop(service, None)

    def snapshot(self):
        return dict(self.active)


class FakeShop:
    """Checkout answers in 10 ms; login hangs forever (only a timeout ends it)."""

    services = ("gateway", "orders", "payments", "inventory", "email", "login")

    def __init__(self) -> None:
        self.faults = FakeFaults()

    def route(self, name):
        async def checkout():
            await asyncio.sleep(0.01)
            return Response(200, ("gateway", "orders"))

        async def login():
            await asyncio.sleep(3600)

        return {"checkout": checkout, "login": login}[name]


@pytest.fixture
def shop():
    return FakeShop()


@pytest.fixture
def panel(shop, rng):
    panel = FaultPanel(shop, rng=rng)
    yield panel
    panel.stop()


def test_service_dropdown_offers_the_shops_services(panel, shop):
    assert panel.service.options == shop.services


def test_apply_injects_the_chosen_fault_into_the_chosen_service(panel, shop):
    panel.service.value = "payments"
    panel.kind.value = "ErrorRate"
    panel.params["probability"].value = 0.3
    panel.params["status"].value = 500
    panel.apply_button.click()
    assert shop.faults.calls == [("inject", "payments", (faults.ErrorRate(0.3, status=500),))]
    assert "payments: error_rate(probability=0.3, status=500)" in panel.info.value


@pytest.mark.parametrize(("kind", "expected"), [
    ("Latency", faults.Latency(0.5)),
    ("RandomLatency", faults.RandomLatency(0.05, 0.5)),
    ("LatencySpikes", faults.LatencySpikes(1.0, 0.05)),
    ("ErrorRate", faults.ErrorRate(0.3, 503)),
    ("Hang", faults.Hang(1.0)),
    ("ConnectionReset", faults.ConnectionReset(1.0)),
    ("Blackhole", faults.Blackhole(1.0)),
    ("Slow", faults.Slow(200.0)),
])
def test_every_kind_builds_its_fault_from_the_sliders_and_names_its_fallacy(
        panel, shop, kind, expected):
    panel.kind.value = kind
    assert set(panel.params) == {f for f in vars(expected) if not f.startswith("_")}
    panel.apply_button.click()
    assert shop.faults.calls == [("inject", "gateway", (expected,))]
    assert html.escape(expected.fallacy, quote=False) in panel.info.value


def test_sliders_change_with_the_fault_kind(panel):
    panel.kind.value = "Slow"
    assert list(panel.params) == ["bytes_per_second"]
    panel.kind.value = "RandomLatency"
    assert list(panel.params) == ["low", "high"]
    assert panel.param_box.children == tuple(panel.params.values())


def test_a_fault_the_library_refuses_is_reported_and_not_applied(panel, shop):
    panel.kind.value = "RandomLatency"
    panel.params["low"].value = 2.0
    panel.params["high"].value = 1.0
    panel.apply_button.click()
    assert shop.faults.calls == []
    assert "not applied" in panel.info.value


def test_clear_removes_one_service_and_clear_all_everything(panel, shop):
    panel.service.value = "payments"
    panel.apply_button.click()
    panel.clear_button.click()
    panel.clear_all_button.click()
    assert [call[0:2] for call in shop.faults.calls] == [
        ("inject", "payments"), ("clear", "payments"), ("clear", None)]
    assert "Active faults:</b> none" in panel.info.value


def test_the_panel_displays_as_a_widget(panel):
    bundle = panel._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == panel.widget.model_id


def test_starting_without_an_event_loop_is_reported_in_the_panel(panel):
    panel.run_toggle.value = True
    assert panel.run_toggle.value is False
    assert "could not start the load" in panel.info.value
    assert not panel.running


def test_stop_is_harmless_before_start_and_twice(panel):
    panel.stop()
    panel.stop()
    assert not panel.running and panel.run_toggle.description == "Start load"


def test_redraw_shows_the_chart_as_a_png(panel):
    panel.stats.extend([rec(0.0), rec(0.0, ok=False, route="login")])
    panel.redraw()
    (output,) = panel.chart.outputs
    assert base64.b64decode(output["data"]["image/png"]).startswith(b"\x89PNG")


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"rate": 0}, "rate"), ({"refresh": -1}, "refresh"), ({"window": 0}, "window"),
    ({"timeout": float("inf")}, "timeout"), ({"routes": ()}, "routes"),
])
def test_panel_refuses_bad_settings(shop, kwargs, name):
    with pytest.raises(ValueError, match=name):
        FaultPanel(shop, **kwargs)


async def test_background_load_fills_the_window_and_stop_cancels_everything(shop, rng):
    """Check, in virtual time, the open-loop load per route, its timeouts, and a clean stop."""
    loop = asyncio.get_running_loop()
    panel = FaultPanel(shop, rate=10.0, window=5.0, rng=rng, timeout=0.5)
    panel.run_toggle.value = True  # what the Start button does
    assert panel.running and panel.run_toggle.description == "Stop load"
    await asyncio.sleep(12.0)

    window = panel.stats.window_stats(loop.time())
    checkout, login = window["checkout"], window["login"]
    assert 30 <= checkout.requests <= 80 and 30 <= login.requests <= 80  # about 10/s for 5 s
    assert (checkout.success_rate, checkout.p99) == (1.0, pytest.approx(0.01))
    assert (login.success_rate, login.p99) == (0.0, pytest.approx(0.5))  # every one timed out
    assert panel._requests  # hung logins are waiting on their timeout

    panel.stop()
    panel.stop()
    await asyncio.sleep(0)
    assert not panel.running and panel.run_toggle.value is False
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert all(t.done() for t in others)
    await asyncio.sleep(5.0)
    after = panel.stats.window_stats(loop.time())
    assert sum(w.requests for w in after.values()) == 0  # nothing was sent after stop()
