"""A live panel for module 04: break payments on the running shop, watch a breaker trip.

``BreakerPanel(shop)`` wraps the calls from orders to payments in a per-call timeout, a
circuit breaker and (optionally) a fallback that accepts the order and charges later,
sends checkouts to the shop in the background (asyncio tasks on the notebook's loop, so
the kernel stays free), and shows the breaker's state and a chart of the last ``window``
seconds: checkout success rate, p99 latency and the breaker's state. "Break payments"
injects a fault into payments; "Breaker" takes the breaker out to compare. ``.stop()``
cancels the load and restores the shop's wiring and faults.

The breaker is made by ``breaker_factory`` with the course contract's keywords, so the
learner's own ``CircuitBreaker`` class works here as well as the reference one.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from faultline.breaker import CircuitBreaker, TransitionLog
from faultline.errors import CircuitOpenError
from faultline.faults import ErrorRate, Fault, Hang, Latency
from faultline.load import send_and_record
from faultline.messages import Request, Response
from faultline.timeouts import with_timeout
from faultline.viz import (
    INK,
    P99_COLOUR,
    SERIES_COLOURS,
    STATE_COLOURS,
    _ms,
    _percent,
    _tidy,
    state_timeline,
)
from faultline.widgets import LivePanel, LiveStats, WindowStats

__all__ = ["FAULTS", "BreakerPanel", "charge_later"]

ROUTE = "checkout"

# What "Break payments" can do to it: label -> fault.
FAULTS: dict[str, Fault] = {
    "hang: payments never answers": Hang(),
    "errors: every charge fails (503)": ErrorRate(1.0),
    "errors: 60 % of charges fail": ErrorRate(0.6),
    "slow: every charge takes 2 s longer": Latency(2.0),
}

DEFAULT_BREAKER = {"window_size": 20, "minimum_calls": 10, "open_timeout": 5.0,
                   "half_open_max_calls": 1}


def charge_later(counter: list[int] | None = None) -> Callable[..., Any]:
    """A fallback wrapper: when the breaker refuses, accept the order and charge it later
    (202). ``counter[0]`` counts the orders it answered, if given."""

    async def fallback(send: Callable[[Request], Any], request: Request) -> Response:
        try:
            return await send(request)
        except CircuitOpenError:
            if counter is not None:
                counter[0] += 1
            return Response(202, {"charge": "later"})

    return fallback


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _state_at(log: TransitionLog, at: float, initial: str = "closed") -> str:
    """The breaker's state at time ``at``, from its transition events."""
    state = initial
    for event in log.events:
        if event.at > at:
            break
        state = event.new.value
    return state


def _render(buckets: list[WindowStats], summary: WindowStats, transitions: list[tuple],
            initial: str, now: float, window: float) -> str:
    """Checkout success rate, p99 latency and the breaker's state over the last ``window``
    seconds, as base64 PNG. A bare ``Figure`` (no pyplot): safe on a worker thread."""
    fig = Figure(figsize=(8.5, 5.4), layout="constrained")
    top, middle, bottom = fig.subplots(3, 1, sharex=True, height_ratios=(1, 1, 0.8))
    for ax in (top, middle):
        _tidy(ax)
    xs = [b.end - now for b in buckets]
    rate = [100 * b.success_rate if b.success_rate is not None else math.nan for b in buckets]
    p99 = [1000 * b.p99 if b.p99 is not None else math.nan for b in buckets]
    top.plot(xs, rate, color=SERIES_COLOURS[0], linewidth=2, marker="o", markersize=3)
    top.set_ylim(-3, 103)
    top.set_ylabel("checkouts ok (%)", color=INK)
    headline = "no checkouts yet"
    if summary.requests:
        headline = (f"last {window:g} s: {summary.requests} checkouts, "
                    f"{_percent(summary.success_rate or 0.0, 1)} ok, "
                    f"p99 {_ms(1000 * (summary.p99 or 0.0))}")
    top.set_title(headline, loc="left", fontsize=10, color=INK)
    middle.plot(xs, p99, color=P99_COLOUR, linewidth=2, marker="o", markersize=3)
    middle.set_ylim(bottom=0)
    middle.set_ylabel("p99 latency (ms)", color=INK)
    state_timeline(transitions, start=-window, end=0.0, initial=initial, ax=bottom,
                   title="breaker state")
    bottom.set_xlabel("seconds ago", color=INK)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=85)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


class BreakerPanel(LivePanel):
    """Break payments on the live shop and watch a circuit breaker trip and recover.

    Checkouts arrive at ``rate`` per second (Poisson); orders gives each payments call
    ``timeout`` seconds; the breaker is ``breaker_factory(**breaker_options, clock=...,
    on_transition=...)``. Show the panel by making it a cell's value.
    """

    def __init__(
        self,
        shop: Any,
        *,
        breaker_factory: Callable[..., Any] = CircuitBreaker,
        breaker_options: Mapping[str, Any] | None = None,
        rate: float = 20.0,
        timeout: float = 0.5,
        window: float = 30.0,
        refresh: float = 0.5,
        fallback: bool = True,
        rng: random.Random | None = None,
        user_timeout: float = 5.0,
    ) -> None:
        self.shop = shop
        self.rate = _positive("rate", rate)
        self.timeout = _positive("timeout", timeout)
        self.refresh = _positive("refresh", refresh)
        self.user_timeout = _positive("user_timeout", user_timeout)
        self.rng = rng if rng is not None else random.Random()
        self.stats = LiveStats([ROUTE], window=window, bucket=1.0)
        self.log = TransitionLog()
        self.fallbacks = [0]  # orders answered by the fallback
        self.rejected = 0  # calls the breaker refused
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._origin: float | None = None
        self.breaker = breaker_factory(**{**DEFAULT_BREAKER, **dict(breaker_options or {})},
                                       clock=self._clock, on_transition=self._on_transition)
        self._tasks: set[asyncio.Task[None]] = set()
        self._requests: set[asyncio.Task[None]] = set()
        self._injected = False
        self._message = ""
        self._build(fallback)
        self._wire()

    # -- time: the loop's clock, as seconds since the panel's load first started

    def _clock(self) -> float:
        loop = self._loop
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        return loop.time() if loop is not None else 0.0

    def _now(self) -> float:
        return self._clock() - (self._origin if self._origin is not None else self._clock())

    def _on_transition(self, old: Any, new: Any, at: float) -> None:
        origin = self._origin if self._origin is not None else at
        self.log(old, new, at - origin)

    # -- widgets

    def _build(self, fallback: bool) -> None:
        self.run_toggle = widgets.ToggleButton(value=False, tooltip="send checkouts to the shop")
        self.break_toggle = widgets.ToggleButton(value=False,
                                                 tooltip="inject the chosen fault into payments")
        self.fault_choice = widgets.Dropdown(options=list(FAULTS), value=next(iter(FAULTS)),
                                             layout=widgets.Layout(width="280px"))
        self.breaker_toggle = widgets.ToggleButton(value=True, description="Breaker on",
                                                   icon="plug", tooltip="use the breaker")
        self.fallback_box = widgets.Checkbox(value=fallback, description="fallback: charge later",
                                             indent=False, layout=widgets.Layout(width="190px"))
        self.info = widgets.HTML()
        self.chart = widgets.Output(layout=widgets.Layout(min_height="120px"))

        self.run_toggle.observe(self._on_run, names="value")
        self.break_toggle.observe(self._on_break, names="value")
        self.fault_choice.observe(self._on_fault_choice, names="value")
        self.breaker_toggle.observe(lambda _c: self._wire(), names="value")
        self.fallback_box.observe(lambda _c: self._wire(), names="value")
        self.widget = widgets.VBox([
            widgets.HBox([self.run_toggle, self.break_toggle, self.fault_choice]),
            widgets.HBox([self.breaker_toggle, self.fallback_box]),
            self.info, self.chart])
        self._show_controls()


    def _show_controls(self) -> None:
        running, broken = self.running, self.break_toggle.value
        self.run_toggle.description = "Stop load" if running else "Start load"
        self.run_toggle.icon = "stop" if running else "play"
        self.run_toggle.button_style = "warning" if running else "success"
        self.break_toggle.description = "Fix payments" if broken else "Break payments"
        self.break_toggle.icon = "wrench" if broken else "bolt"
        self.break_toggle.button_style = "info" if broken else "danger"
        on = self.breaker_toggle.value
        self.breaker_toggle.description = "Breaker on" if on else "Breaker off"
        self.breaker_toggle.button_style = "success" if on else ""
        self._show_info()

    def _show_info(self) -> None:
        try:
            state = str(getattr(self.breaker.state, "value", self.breaker.state))
        except Exception as exc:  # a learner's breaker may raise: say so, don't break
            state = f"unknown ({type(exc).__name__}: {exc})"
        colour = STATE_COLOURS.get(state, "#777777")
        if not self.breaker_toggle.value:
            badge = '<span style="color:#777777"><b>breaker off</b></span>'
        else:
            badge = (f'<span style="background:{colour};color:white;padding:1px 8px;'
                     f'border-radius:8px"><b>{html.escape(state.replace("_", "-"))}</b></span>')
        fault = (html.escape(self.fault_choice.value) if self.break_toggle.value
                 else "healthy")
        try:
            busy = self.shop.service("orders").busy
            sent = self.shop.client("orders").sent.get("payments", 0)
        except Exception:  # a fake shop in tests may lack them
            busy = sent = "?"
        load = (f"{self.rate:g} checkouts/s, each orders → payments call bounded to "
                f"{self.timeout:g} s" if self.running else "stopped")
        lines = [
            f"<b>Breaker:</b> {badge} &nbsp; opened {sum(1 for e in self.log if e.new == 'open')}"
            f" times; refused {self.rejected} calls; fallback answered {self.fallbacks[0]}",
            f"<b>Payments:</b> {fault}; calls sent so far: {sent}; "
            f"<b>orders busy now:</b> {busy}",
            f"<b>Load:</b> {html.escape(load)}",
        ]
        if self._message:
            lines.append(self._message)
        self.info.value = "<br>".join(lines)


    # -- the wiring: orders → payments through fallback, breaker and timeout

    def _wire(self) -> None:
        wrappers: list[Any] = []
        if self.fallback_box.value:
            wrappers.append(charge_later(self.fallbacks))
        if self.breaker_toggle.value:
            wrappers.append(self._through_breaker)
        wrappers.append(self._bounded)
        self.shop.client("orders").use("payments", *wrappers)
        if hasattr(self, "run_toggle"):
            self._show_controls()

    async def _through_breaker(self, send: Callable[[Request], Any], request: Request) -> Any:
        try:
            return await self.breaker.call(send, request)
        except CircuitOpenError:
            self.rejected += 1
            raise

    async def _bounded(self, send: Callable[[Request], Any], request: Request) -> Any:
        return await with_timeout(send(request), self.timeout)

    # -- faults

    def _on_break(self, change: Any) -> None:
        if change["new"]:
            self.shop.faults.inject("payments", FAULTS[self.fault_choice.value])
            self._injected = True
        elif self._injected:
            self.shop.faults.clear("payments")
            self._injected = False
        self._show_controls()

    def _on_fault_choice(self, _change: Any) -> None:
        if self.break_toggle.value:  # switch the fault that is on now
            self.shop.faults.inject("payments", FAULTS[self.fault_choice.value])
        self._show_info()

    def break_payments(self, on: bool = True) -> None:
        """Inject the chosen fault into payments (``on=False``: clear it), like the button."""
        self.break_toggle.value = bool(on)

    # -- load and chart

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def _on_run(self, change: Any) -> None:
        if change["new"]:
            try:
                self.start()
            except Exception as exc:
                self._say(f"could not start the load: {exc}", error=True)
                self.run_toggle.value = False
        else:
            self._stop_load()

    def start(self) -> None:
        """Start the checkouts and the chart on the running loop (no-op if running)."""
        if self.running:
            return
        loop = self._running_loop()
        self._loop = loop
        if self._origin is None:
            self._origin = loop.time()
        self._wire()
        for coro in (self._drive(), self._refresh_forever()):
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._on_task_done)
        self._message = ""
        self.run_toggle.value = True  # its observer calls start() again: a no-op now
        self._show_controls()


    def _stop_load(self) -> None:
        tasks = [*self._tasks, *self._requests]
        self._tasks.clear()
        self._requests.clear()
        for task in tasks:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()
        self.run_toggle.value = False
        self._show_controls()

    def stop(self) -> None:
        """Stop the load, remove the panel's wrappers from orders and clear its fault."""
        self._stop_load()
        self.shop.client("orders").use("payments")
        if self._injected:
            self.shop.faults.clear("payments")
            self._injected = False
        self.break_toggle.value = False


    async def _drive(self) -> None:
        """Open-loop checkouts: new ones keep arriving however slow the old ones are."""
        loop = asyncio.get_running_loop()
        send = self.shop.route(ROUTE)
        due = loop.time()
        while True:
            due += self.rng.expovariate(self.rate)
            now = loop.time()
            if due < now - 1.0:  # the loop was busy for a while: no burst to catch up
                due = now
            await asyncio.sleep(max(0.0, due - now))
            request = loop.create_task(self._request(send))
            self._requests.add(request)
            request.add_done_callback(self._requests.discard)

    async def _request(self, send: Any) -> None:
        record = await send_and_record(send, origin=self._origin or 0.0,
                                       timeout=self.user_timeout, route=ROUTE)
        self.stats.add(record)

    _render = staticmethod(_render)

    def chart_data(self) -> tuple[Any, ...]:
        """What the chart shows now: buckets, window summary, transitions, initial state."""
        now = self._now()
        window = self.stats.window
        self.stats.prune(now)
        start = now - window
        moves = [(e.old, e.new, e.at - now) for e in self.log if e.at > start]
        initial = _state_at(self.log, start)
        return (self.stats.buckets(now)[ROUTE], self.stats.window_stats(now)[ROUTE], moves,
                initial, now, window)



