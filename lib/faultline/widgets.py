"""A live fault-injection panel for the toy shop running in the notebook's own event loop.

``FaultPanel(shop)`` has dropdowns and sliders to inject a fault into one service, a
Start/Stop toggle that sends open-loop load to the shop's routes as background tasks on
the kernel's asyncio loop (never blocking it), and a chart of each route's success rate
and p99 latency over the last ``window`` seconds, redrawn every ``refresh`` seconds.

``LiveStats`` is the logic underneath, with no widgets and no clock of its own: it keeps
the records of the last ``window`` seconds and computes windowed statistics at the ``now``
it is given, so it can be tested exactly.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import html
import io
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import ipywidgets as widgets
from matplotlib.figure import Figure

from faultline.load import Record, send_and_record
from faultline.slo import percentile
from faultline.viz import INK, SERIES_COLOURS, _ms, _percent, _tidy

__all__ = ["FaultPanel", "LiveStats", "WindowStats"]


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 \
            or math.isinf(value):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


# --- the logic: windowed statistics per route -------------------------------------------


@dataclass(frozen=True)
class WindowStats:
    """The requests of one route that ended in the interval (``start``, ``end``]."""

    route: str
    start: float
    end: float
    requests: int
    failed: int
    p50: float | None  # seconds; None when no request ended in the interval
    p99: float | None

    @property
    def success_rate(self) -> float | None:
        """Share of requests that succeeded (``Record.ok``); ``None`` with no requests."""
        return (self.requests - self.failed) / self.requests if self.requests else None


def _stats(route: str, start: float, end: float, records: Iterable[Record]) -> WindowStats:
    records = list(records)
    latencies = [r.latency for r in records]
    return WindowStats(
        route=route, start=start, end=end, requests=len(records),
        failed=sum(1 for r in records if not r.ok),
        p50=percentile(latencies, 50) if latencies else None,
        p99=percentile(latencies, 99) if latencies else None,
    )


class LiveStats:
    """Records of the last ``window`` seconds per route, summarised at a given ``now``.

    A request counts in the interval in which it *ended* (that is when its outcome is
    known). Times are whatever the records use: seconds since the load started.
    """

    def __init__(self, routes: Iterable[str] = (), window: float = 30.0,
                 bucket: float = 1.0) -> None:
        self.window = _positive("window", window)
        self.bucket = _positive("bucket", bucket)
        self._records: dict[str, deque[Record]] = {route: deque() for route in routes}

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(self._records)

    def add(self, record: Record) -> None:
        """Keep one finished request (a route not seen before gets its own series)."""
        self._records.setdefault(record.route, deque()).append(record)

    def extend(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record)

    def prune(self, now: float) -> None:
        """Forget requests that ended before the window that ends at ``now``."""
        oldest = now - self.window
        for route, records in self._records.items():
            self._records[route] = deque(r for r in records if r.end > oldest)

    def _in(self, route: str, start: float, end: float) -> list[Record]:
        return [r for r in self._records.get(route, ()) if start < r.end <= end]

    def window_stats(self, now: float) -> dict[str, WindowStats]:
        """Per route: success rate and latency percentiles over (``now - window``, ``now``]."""
        start = now - self.window
        return {route: _stats(route, start, now, self._in(route, start, now))
                for route in self._records}

    def buckets(self, now: float) -> dict[str, list[WindowStats]]:
        """Per route: the same per ``bucket`` seconds, for the buckets (k·b, (k+1)·b] that
        start inside the window, oldest first; the last one is still filling up."""
        first = math.ceil((now - self.window) / self.bucket)
        last = max(first, math.ceil(now / self.bucket) - 1)
        result: dict[str, list[WindowStats]] = {}
        for route in self._records:
            grouped: dict[int, list[Record]] = {}
            for r in self._in(route, first * self.bucket, now):
                grouped.setdefault(math.ceil(r.end / self.bucket) - 1, []).append(r)
            result[route] = [
                _stats(route, k * self.bucket, (k + 1) * self.bucket, grouped.get(k, ()))
                for k in range(first, last + 1)
            ]
        return result


# --- the fault kinds the panel offers ------------------------------------------------------


@dataclass(frozen=True)
class _Param:
    """One constructor argument of a fault kind, and the slider (or dropdown) that sets it."""

    name: str
    label: str
    default: float
    low: float = 0.0
    high: float = 1.0
    step: float = 0.01
    readout: str = ".2f"  # d3-format, as ipywidgets uses
    log: bool = False  # a FloatLogSlider: low/high/step are powers of ten
    choices: tuple[int, ...] = ()  # a dropdown instead of a slider


def _probability(default: float = 1.0, label: str = "how often") -> _Param:
    return _Param("probability", label, default, readout=".0%")


@dataclass(frozen=True)
class _Kind:
    """A fault class in ``faultline.faults`` (looked up by name when needed) and its knobs."""

    cls_name: str
    label: str
    what: str
    params: tuple[_Param, ...]

    def fault_class(self) -> type:
        from faultline import faults  # lazily: widgets import without it

        return getattr(faults, self.cls_name)

    def fallacy(self) -> str:
        try:
            return str(self.fault_class().fallacy)
        except (ImportError, AttributeError):
            return ""


_KINDS: dict[str, _Kind] = {kind.cls_name: kind for kind in (
    _Kind("Latency", "latency: fixed delay", "every request waits longer",
          (_Param("seconds", "delay (s)", 0.5, 0.0, 5.0, 0.05),)),
    _Kind("RandomLatency", "latency: random delay", "every request waits a random time",
          (_Param("low", "min (s)", 0.05, 0.0, 5.0, 0.05),
           _Param("high", "max (s)", 0.5, 0.0, 5.0, 0.05))),
    _Kind("LatencySpikes", "latency: spikes", "some requests wait much longer: a fat tail",
          (_Param("seconds", "spike (s)", 1.0, 0.0, 10.0, 0.1, ".1f"), _probability(0.05))),
    _Kind("ErrorRate", "errors (5xx)", "some requests are answered at once with an error",
          (_probability(0.3), _Param("status", "status", 503, choices=(500, 502, 503, 504)))),
    _Kind("Hang", "hang", "the service takes the request and never answers",
          (_probability(),)),
    _Kind("ConnectionReset", "connection reset", "the connection drops before the answer",
          (_probability(),)),
    _Kind("Blackhole", "black hole (partition)", "requests are lost on the way: no answer",
          (_probability(),)),
    _Kind("Slow", "slow link (bandwidth)", "answers trickle out a few bytes at a time",
          (_Param("bytes_per_second", "bytes/s", 200.0, 1.0, 5.0, 0.1, ".3g", log=True),)),
)}


def _param_widget(param: _Param) -> widgets.ValueWidget:
    style = {"description_width": "90px"}
    layout = widgets.Layout(width="340px")
    if param.choices:
        return widgets.Dropdown(options=param.choices, value=int(param.default),
                                description=param.label, style=style, layout=layout)
    if param.log:
        return widgets.FloatLogSlider(value=param.default, base=10, min=param.low,
                                      max=param.high, step=param.step, readout_format=param.readout,
                                      description=param.label, style=style, layout=layout)
    return widgets.FloatSlider(value=param.default, min=param.low, max=param.high,
                               step=param.step, readout_format=param.readout,
                               description=param.label, style=style, layout=layout)


def _text(text: str) -> str:
    return html.escape(text, quote=False)


def _describe_fault(item: Any) -> str:
    """``{"kind": "error_rate", "probability": 0.3}`` → ``error_rate(probability=0.3)``."""
    if isinstance(item, Mapping) and "kind" in item:
        params = ", ".join(f"{k}={v!r}" for k, v in item.items() if k != "kind")
        return f"{item['kind']}({params})"
    return str(item)


def _describe_snapshot(snapshot: Any) -> str:
    if not snapshot:
        return "none"
    if isinstance(snapshot, Mapping):
        parts = []
        for target, faults in snapshot.items():
            items = faults if isinstance(faults, list | tuple) else [faults]
            parts.append(f"{target}: " + ", ".join(_describe_fault(f) for f in items))
        return "; ".join(parts)
    return str(snapshot)


# --- the chart ------------------------------------------------------------------------------


def _render_chart(buckets: Mapping[str, list[WindowStats]],
                  summary: Mapping[str, WindowStats], now: float, window: float) -> str:
    """Success rate and p99 per route over the last ``window`` seconds, as base64 PNG.

    Uses a bare ``Figure`` (no pyplot), so it may run on a worker thread.
    """
    fig = Figure(figsize=(8.5, 4.6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    for ax in (top, bottom):
        _tidy(ax)
    for i, (route, series) in enumerate(buckets.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        xs = [b.end - now for b in series]
        rate = [100 * b.success_rate if b.success_rate is not None else math.nan
                for b in series]
        p99 = [1000 * b.p99 if b.p99 is not None else math.nan for b in series]
        total = summary.get(route)
        label = route
        if total is not None and total.requests:
            label += (f": {_percent(total.success_rate or 0.0, 1)} ok, "
                      f"p99 {_ms(1000 * (total.p99 or 0.0))}")
        top.plot(xs, rate, color=colour, linewidth=2, marker="o", markersize=3, label=label)
        bottom.plot(xs, p99, color=colour, linewidth=2, marker="o", markersize=3)
    top.set_ylim(-3, 103)
    top.set_ylabel("success rate (%)", color=INK)
    top.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=min(3, len(buckets)),
               frameon=False, fontsize=9.5, handlelength=1.5, alignment="left",
               title=f"over the last {window:g} s", title_fontsize=9)
    bottom.set_ylim(bottom=0)
    bottom.set_ylabel("p99 latency (ms)", color=INK)
    bottom.set_xlim(-window, 0)
    bottom.set_xlabel(f"seconds ago (each point: the requests that ended in that "
                      f"{_bucket_words(buckets)})", color=INK)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _bucket_words(buckets: Mapping[str, list[WindowStats]]) -> str:
    for series in buckets.values():
        if series:
            width = series[0].end - series[0].start
            return "second" if width == 1 else f"{width:g} s"
    return "second"


_render_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _chart_thread() -> concurrent.futures.ThreadPoolExecutor:
    """One worker for every panel's drawing: matplotlib is used by one thread at a time."""
    global _render_pool
    if _render_pool is None:
        _render_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="faultline-chart")
    return _render_pool


# --- the panel ------------------------------------------------------------------------------


class LivePanel:
    """What every live panel shares: showing itself, a status message, the asyncio loop it
    runs on, and a chart redrawn on a worker thread so requests never wait on drawing.

    A subclass sets ``widget``, ``chart``, ``_loop`` and ``_message``, and provides
    ``chart_data()``, ``_show_info()`` and ``_render`` (chart data in, PNG base64 out).
    """

    widget: Any
    chart: Any
    refresh: float
    _loop: asyncio.AbstractEventLoop | None
    _message: str
    _render: Callable[..., str]

    def chart_data(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def _show_info(self) -> None:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        return self.widget._repr_mimebundle_(**kwargs)

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = "#D55E00" if error else "#555555"
        self._message = f'<span style="color:{colour}">{_text(text)}</span>'
        self._show_info()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with contextlib.suppress(RuntimeError):
            return asyncio.get_running_loop()
        if self._loop is not None and self._loop.is_running():
            return self._loop
        raise RuntimeError(f"{type(self).__name__} needs a running asyncio loop: use it in a "
                           "notebook (the kernel runs one), or call start() from a coroutine")

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._say(f"background task failed: {task.exception()!r}", error=True)

    def _show_chart(self, png_base64: str) -> None:
        # Replacing ``outputs`` works from background tasks, where ``with output:`` does not.
        self.chart.outputs = ({
            "output_type": "display_data",
            "data": {"image/png": png_base64, "text/plain": f"<{type(self).__name__} chart>"},
            "metadata": {},
        },)

    def redraw(self) -> None:
        """Redraw the chart and the status line now, on this thread."""
        self._show_chart(self._render(*self.chart_data()))
        self._show_info()

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Statistics on the loop; drawing on a worker thread, so requests never wait on it.
            png = await loop.run_in_executor(_chart_thread(), self._render, *self.chart_data())
            self._show_chart(png)
            self._show_info()
            await asyncio.sleep(self.refresh)


class FaultPanel(LivePanel):
    """Inject faults into the live shop and watch each route's success rate and p99 react.

    Load runs as asyncio tasks on the loop that runs this notebook's cells (Poisson arrivals
    at ``rate`` per second per route, each request given up after ``timeout`` seconds);
    ``.stop()`` cancels all of it. Show the panel by making it a cell's value.
    """

    def __init__(
        self,
        shop: Any,
        routes: Iterable[str] = ("checkout", "login"),
        rate: float = 20.0,
        window: float = 30.0,
        refresh: float = 1.0,
        rng: random.Random | None = None,
        *,
        timeout: float = 2.0,
    ) -> None:
        self.shop = shop
        self.routes = tuple(routes)
        if not self.routes or not all(isinstance(r, str) for r in self.routes):
            raise ValueError(f"routes must be one or more route names, got {routes!r}")
        self.rate = _positive("rate", rate)
        self.refresh = _positive("refresh", refresh)
        self.timeout = _positive("timeout", timeout)
        self.rng = rng if rng is not None else random.Random()
        self.stats = LiveStats(self.routes, window=window, bucket=self.refresh)
        self._tasks: set[asyncio.Task[None]] = set()  # the drivers and the chart loop
        self._requests: set[asyncio.Task[None]] = set()  # requests in flight
        self._origin: float | None = None
        self._message = ""
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._build()

    # -- widgets

    def _build(self) -> None:
        wide = {"description_width": "60px"}
        self.service = widgets.Dropdown(options=tuple(self.shop.services), description="service",
                                        style=wide, layout=widgets.Layout(width="240px"))
        self.kind = widgets.Dropdown(options=[(k.label, name) for name, k in _KINDS.items()],
                                     description="fault", style=wide,
                                     layout=widgets.Layout(width="300px"))
        self.params: dict[str, widgets.ValueWidget] = {}
        self.param_box = widgets.VBox()
        self.apply_button = widgets.Button(description="Apply", icon="bolt",
                                           button_style="danger",
                                           tooltip="replace this service's faults with this one")
        self.clear_button = widgets.Button(description="Clear", icon="eraser",
                                           tooltip="remove this service's faults")
        self.clear_all_button = widgets.Button(description="Clear all", icon="trash",
                                               tooltip="remove every fault in the shop")
        self.run_toggle = widgets.ToggleButton(value=False)
        self.info = widgets.HTML()
        self.chart = widgets.Output(layout=widgets.Layout(min_height="120px"))

        self.kind.observe(self._on_kind, names="value")
        self.apply_button.on_click(lambda _b: self.apply())
        self.clear_button.on_click(lambda _b: self.clear())
        self.clear_all_button.on_click(lambda _b: self.clear_all())
        self.run_toggle.observe(self._on_toggle, names="value")

        buttons = widgets.HBox([self.apply_button, self.clear_button, self.clear_all_button,
                                widgets.HTML("&nbsp;" * 4), self.run_toggle])
        self.widget = widgets.VBox([
            widgets.HBox([self.service, self.kind]), self.param_box, buttons, self.info,
            self.chart,
        ])
        self._show_params()
        self._show_toggle()
        self._show_info()


    def _show_params(self) -> None:
        self.params = {p.name: _param_widget(p) for p in _KINDS[self.kind.value].params}
        self.param_box.children = tuple(self.params.values())

    def _show_toggle(self) -> None:
        running = self.running
        self.run_toggle.description = "Stop load" if running else "Start load"
        self.run_toggle.icon = "stop" if running else "play"
        self.run_toggle.button_style = "warning" if running else "success"

    def _show_info(self) -> None:
        kind = _KINDS[self.kind.value]
        try:
            active = _describe_snapshot(self.shop.faults.snapshot())
        except Exception as exc:  # a status line must not break the panel
            active = f"(cannot read the faults: {exc})"
        fallacy = kind.fallacy()
        load = (f"running: {self.rate:g} requests/s on each of {', '.join(self.routes)}, "
                f"timeout {self.timeout:g} s" if self.running else "stopped")
        about = f"<b>{_text(kind.label)}</b>: {_text(kind.what)}"
        if fallacy:
            about += f" &mdash; fallacy: <i>&ldquo;{_text(fallacy)}&rdquo;</i>"
        lines = [f"<b>Active faults:</b> {_text(active)}", about, f"<b>Load:</b> {_text(load)}"]
        if self._message:
            lines.append(self._message)
        self.info.value = "<br>".join(lines)


    def _on_kind(self, _change: Any) -> None:
        self._message = ""
        self._show_params()
        self._show_info()

    def _on_toggle(self, change: Any) -> None:
        if change["new"]:
            try:
                self.start()
            except Exception as exc:  # report it in the panel, untoggle
                self._say(f"could not start the load: {exc}", error=True)
                self.run_toggle.value = False
        else:
            self.stop()

    # -- faults

    def fault(self) -> Any:
        """The fault object the controls describe now, e.g. ``ErrorRate(probability=0.3)``."""
        kind = _KINDS[self.kind.value]
        values = {name: (int(w.value) if isinstance(w, widgets.Dropdown) else float(w.value))
                  for name, w in self.params.items()}
        return kind.fault_class()(**values)

    def apply(self) -> None:
        """Replace the chosen service's faults with the one set up in the controls."""
        try:
            fault = self.fault()
        except (ValueError, TypeError, ImportError, AttributeError) as exc:
            self._say(f"not applied: {exc}", error=True)
            return
        self.shop.faults.inject(self.service.value, fault)
        self._say(f"applied to {self.service.value}")

    def clear(self) -> None:
        """Remove the chosen service's faults."""
        self.shop.faults.clear(self.service.value)
        self._say(f"cleared {self.service.value}")

    def clear_all(self) -> None:
        """Remove every fault in the shop."""
        self.shop.faults.clear()
        self._say("cleared all faults")

    # -- load and chart

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)


    def start(self) -> None:
        """Start the background load and the chart on the running loop (no-op if running)."""
        if self.running:
            return
        loop = self._running_loop()
        sends = {route: self.shop.route(route) for route in self.routes}
        if self._origin is None:
            self._origin = loop.time()
        for route, send in sends.items():
            self._spawn(loop, self._drive(route, send))
        self._spawn(loop, self._refresh_forever())
        self._message = ""
        self.run_toggle.value = True  # its observer calls start() again: a no-op now
        self._show_toggle()
        self._show_info()

    def stop(self) -> None:
        """Cancel the load, the requests in flight and the chart loop; safe to call again."""
        tasks = [*self._tasks, *self._requests]
        self._tasks.clear()
        self._requests.clear()
        for task in tasks:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                task.cancel()
        self.run_toggle.value = False  # its observer calls stop() again: nothing left to do
        self._show_toggle()
        self._show_info()

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)


    async def _drive(self, route: str, send: Any) -> None:
        """Open-loop arrivals for one route: new requests whatever the old ones are doing."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.rng.expovariate(self.rate)
            now = loop.time()
            if due < now - 1.0:  # the loop was busy for a while: no burst to catch up
                due = now
            await asyncio.sleep(max(0.0, due - now))
            request = loop.create_task(self._request(route, send))
            self._requests.add(request)
            request.add_done_callback(self._requests.discard)

    async def _request(self, route: str, send: Any) -> None:
        record = await send_and_record(send, origin=self._origin or 0.0, timeout=self.timeout,
                                       route=route)
        self.stats.add(record)

    def _now(self) -> float:
        loop = self._loop
        with contextlib.suppress(RuntimeError):
            loop = asyncio.get_running_loop()
        if loop is None or self._origin is None:
            return 0.0
        return loop.time() - self._origin

    _render = staticmethod(_render_chart)

    def chart_data(self) -> tuple[Any, ...]:
        """What the chart shows now: (buckets, window stats, now, window)."""
        now = self._now()
        self.stats.prune(now)
        return self.stats.buckets(now), self.stats.window_stats(now), now, self.stats.window



